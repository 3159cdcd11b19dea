"""The model server: MLflow's own scoring app for a pyfunc model, behind taskyard's input limits.

``python -m taskyard.serving --model-uri models:/NAME/VERSION --host H --port P`` is what the
deploy step starts. It is MLflow's scoring server (``mlflow.pyfunc.scoring_server.init``, the
app ``mlflow models serve`` runs), so requests and answers are exactly MLflow's, plus:

- a cap on the request body (``413``) and on JSON nesting depth (``400``), checked before the
  body reaches pandas: MLflow's server reads any size and answers a deeply nested body with a
  500 after a RecursionError (see :mod:`taskyard.serving.limits`);
- it listens only once the model is loaded, so ``/ping`` answering means "model loaded".
"""
