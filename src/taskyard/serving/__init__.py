"""The model server: MLflow's own scoring app for a pyfunc model, plus health and metrics.

``python -m taskyard.serving --model-uri models:/NAME/VERSION --host H --port P`` is the one
server taskyard runs: locally (the deploy step starts it on 127.0.0.1), in a Kubernetes
Deployment and as a KServe custom predictor (the ``serve`` image, ``--host 0.0.0.0 --port
8080``, ``MLFLOW_TRACKING_URI`` in the environment). Scoring requests and answers are exactly
MLflow's (``mlflow.pyfunc.scoring_server.init``, the app ``mlflow models serve`` runs), plus:

- it listens at once and loads the model in a background thread: ``/health`` (readiness)
  answers ``503 {"status": "loading"}`` until the model is loaded, then ``200 {"status":
  "ready", "model_uri": …}``; scoring paths answer ``503`` meanwhile. A model that cannot
  load ends the process with exit code 1 after one line, ``error: cannot load URI: …``, on
  stderr (on Kubernetes: CrashLoopBackOff with that line in the logs);
- ``/live`` (liveness) answers ``200`` while the process serves;
- ``/metrics``: Prometheus metrics of requests, latency, predictions and input features
  (:mod:`taskyard.serving.metrics`);
- a cap on the request body (``413``) and on JSON nesting depth (``400``), checked before the
  body reaches pandas: MLflow's server reads any size and answers a deeply nested body with a
  500 after a RecursionError (see :mod:`taskyard.serving.limits`).
"""
