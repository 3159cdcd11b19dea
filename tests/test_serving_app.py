"""The model server as a real process: /health while loading and once loaded, /live, scoring,
/metrics counted from real requests, a model that cannot load, and the deploy step's probe.

Two sklearn models on sklearn's bundled data sets (iris: classes, diabetes: floats) are logged
and registered once in a SQLite MLflow store under the module's tmp folder; each server is
``python -m taskyard.serving`` on a free port, as the deploy step and the serve image run it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from taskyard import probe
from taskyard.deployments import Deployment, base_url, free_port
from taskyard.errors import StepError

HOST = "127.0.0.1"
MAX_BODY = 4096  # small, so a 413 is cheap to provoke


@dataclass
class Models:
    tracking_uri: str
    iris_x: Any
    iris_pred: list[int]
    diabetes_x: Any
    diabetes_pred: list[float]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.linear_model import LinearRegression, LogisticRegression

    root = tmp_path_factory.mktemp("serving-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        # The env alone is not enough: an earlier test in this process may have set mlflow's
        # global URIs (steps call mlflow.set_tracking_uri), which win over the environment.
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        exp = MlflowClient(uri, uri).create_experiment(
            "serving", artifact_location=(root / "artifacts").as_uri()
        )
        fitted = {}
        for name, (x, y), estimator in (
            ("iris", load_iris(return_X_y=True, as_frame=True), LogisticRegression(max_iter=500)),
            ("diabetes", load_diabetes(return_X_y=True, as_frame=True), LinearRegression()),
        ):
            model = estimator.fit(x, y)
            with mlflow.start_run(experiment_id=exp):
                mlflow.sklearn.log_model(
                    model,
                    name="model",
                    signature=infer_signature(x, model.predict(x)),
                    pip_requirements=["mlflow", "scikit-learn", "pandas"],
                    registered_model_name=name,
                    # Not skops (what train logs): its import costs ~7 s per process here,
                    # which the server's loading window absorbs but this test's budget not.
                    serialization_format="cloudpickle",
                )
            fitted[name] = (x.head(12), model.predict(x.head(12)).tolist())
    yield Models(uri, *fitted["iris"], *fitted["diabetes"])


class Server:
    """``python -m taskyard.serving`` in its own process group; stdout and stderr to files."""

    def __init__(self, tmp: Path, tracking_uri: str, model_uri: str, *extra: str) -> None:
        self.port = free_port(HOST)
        self.url = base_url(HOST, self.port)
        self.model_uri = model_uri
        self.out, self.err = tmp / f"{self.port}.out", tmp / f"{self.port}.err"
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
        env.pop("MLFLOW_REGISTRY_URI", None)
        self.cmd = [
            sys.executable, "-m", "taskyard.serving", "--model-uri", model_uri,
            "--host", HOST, "--port", str(self.port), *extra,
        ]  # fmt: skip
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=err, env=env, start_new_session=True
            )
        self.started = time.monotonic()

    def deployment(self) -> Deployment:
        name, _, version = self.model_uri.removeprefix("models:/").partition("/")
        return Deployment(
            name=name, model=name, version=version, alias="", model_uri=self.model_uri,
            host=HOST, port=self.port, url=self.url, pid=self.proc.pid, pgid=self.proc.pid,
            cmdline=self.cmd, log=str(self.err),
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def call(url: str, body: bytes | None = None, timeout: float = 10) -> tuple[int, bytes]:
    """(status, body) of a GET, or of a JSON POST when ``body`` is given; -1: no connection."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return -1, b""


def split(frame: Any) -> bytes:
    return json.dumps(
        {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
    ).encode()


def scrape(url: str) -> dict[str, list[Any]]:
    """/metrics parsed by prometheus_client's own parser: family name -> samples."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = call(url + "/metrics")
    assert status == 200
    return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}


def value(samples: list[Any], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


@pytest.fixture(scope="module")
def servers(
    models: Models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    """The three start together: each pays MLflow's import, and 2 CPUs overlap the waits."""
    tmp = tmp_path_factory.mktemp("servers")
    started = {
        "iris": Server(
            tmp, models.tracking_uri, "models:/iris/1", "--max-body-bytes", str(MAX_BODY)
        ),
        "diabetes": Server(tmp, models.tracking_uri, "models:/diabetes/1"),
        "missing": Server(tmp, models.tracking_uri, "models:/nope/1"),
    }
    yield started
    for server in started.values():
        server.stop()


def test_health_is_503_while_loading_then_200_and_scoring_is_counted(
    servers: dict[str, Server], models: Models
) -> None:
    server = servers["iris"]
    seen: list[int] = []
    loading_invocation = None
    while time.monotonic() - server.started < 90:
        status, body = call(server.url + "/health", timeout=2)
        if status == 503:
            assert json.loads(body) == {"status": "loading"}
            if loading_invocation is None:  # while loading: alive, and scoring says 503
                assert call(server.url + "/live")[0] == 200
                loading_invocation = call(server.url + "/invocations", split(models.iris_x))[0]
        if status != -1 and (not seen or seen[-1] != status):
            seen.append(status)
        if status == 200:
            assert json.loads(body) == {"status": "ready", "model_uri": "models:/iris/1"}
            break
        assert server.proc.poll() is None, server.err.read_text()
        time.sleep(0.05)
    # It listened before the model was loaded: 503 first, then 200, nothing else.
    assert seen == [503, 200], (seen, server.err.read_text())
    assert loading_invocation in (503, 200)  # 200 only if loading ended in between
    assert call(server.url + "/live")[0] == 200

    # Scoring: the model's own predictions, through MLflow's app.
    status, body = call(server.url + "/invocations", split(models.iris_x))
    assert status == 200, body
    assert json.loads(body) == {"predictions": models.iris_pred}
    half = models.iris_x.head(5)
    assert json.loads(call(server.url + "/invocations", split(half))[1]) == {
        "predictions": models.iris_pred[:5]
    }
    nan_row = models.iris_x.head(1).copy()
    nan_row.iloc[0, 1] = float("nan")  # LogisticRegression refuses NaN: a 400, inputs counted
    assert call(server.url + "/invocations", split(nan_row))[0] == 400
    too_big = b'{"dataframe_split": {"data": [' + b"[1.0, 2.0, 3.0, 4.0], " * 400 + b"]}}"
    assert len(too_big) > MAX_BODY
    assert call(server.url + "/invocations", too_big)[0] == 413
    assert call(server.url + "/ping")[0] == 200

    m = scrape(server.url)
    req = m["taskyard_model_requests"]
    lbl = {"model": "iris", "version": "1", "path": "/invocations"}
    ok = 2 + (loading_invocation == 200)
    assert value(req, "taskyard_model_requests_total", **lbl, status="200") == ok
    assert value(req, "taskyard_model_requests_total", **lbl, status="400") == 1
    assert value(req, "taskyard_model_requests_total", **lbl, status="413") == 1
    if loading_invocation == 503:
        assert value(req, "taskyard_model_requests_total", **lbl, status="503") == 1
    assert value(req, "taskyard_model_requests_total", path="/ping", status="200") == 1
    assert not {s.labels["path"] for s in req} & {"/health", "/live", "/metrics"}
    total = ok + 2 + (loading_invocation == 503)
    lat = m["taskyard_model_request_duration_seconds"]
    assert value(lat, "taskyard_model_request_duration_seconds_count", **lbl) == total
    assert value(lat, "taskyard_model_request_duration_seconds_bucket", **lbl, le="+Inf") == total

    # Class-like predictions: one counter per class, as predicted.
    rows = [*models.iris_pred] * (ok - 1) + models.iris_pred[:5]
    classes = {
        s.labels["class"]: s.value
        for s in m["taskyard_model_predicted_class"]
        if s.name.endswith("_total")
    }
    assert classes == {str(k): float(v) for k, v in Counter(rows).items()}

    # Input summaries: count, sum, sum of squares per feature; the NaN as one missing value.
    frames = [models.iris_x] * (ok - 1) + [half, nan_row]
    feats = m["taskyard_model_feature_value"]
    squares = m["taskyard_model_feature_value_squares"]
    missing = m["taskyard_model_feature_missing"]
    for col in models.iris_x.columns:
        xs = [v for f in frames for v in f[col].tolist() if not math.isnan(v)]
        f = {"model": "iris", "version": "1", "feature": col}
        assert value(feats, "taskyard_model_feature_value_count", **f) == len(xs)
        assert value(feats, "taskyard_model_feature_value_sum", **f) == pytest.approx(sum(xs))
        assert value(squares, "taskyard_model_feature_value_squares_total", **f) == (
            pytest.approx(sum(v * v for v in xs))
        )
        want = 1 if col == models.iris_x.columns[1] else 0
        assert value(missing, "taskyard_model_feature_missing_total", **f) == want
    assert value(m["taskyard_model_ready"], "taskyard_model_ready", model="iris") == 1
    assert not [s for s in m.get("taskyard_model_metrics_errors", []) if s.value]
    # The access log has the scoring requests, not the probes.
    log = server.out.read_text() + server.err.read_text()
    assert '"POST /invocations HTTP/1.1" 200' in log and "GET /health" not in log


def test_float_predictions_fill_the_histogram_and_the_probe_waits_for_health(
    servers: dict[str, Server], models: Models
) -> None:
    server = servers["diabetes"]
    probe.wait_healthy(server.deployment(), server.proc, timeout=90)
    assert call(server.url + "/health")[0] == 200  # the probe returned on ready, not on connect
    status, body = call(server.url + "/invocations", split(models.diabetes_x))
    assert status == 200, body
    preds = json.loads(body)["predictions"]
    assert preds == pytest.approx(models.diabetes_pred)

    hist = scrape(server.url)["taskyard_model_prediction"]
    lbl = {"model": "diabetes", "version": "1"}
    assert value(hist, "taskyard_model_prediction_count", **lbl) == len(preds)
    assert value(hist, "taskyard_model_prediction_sum", **lbl) == pytest.approx(sum(preds))
    for s in hist:
        if s.name == "taskyard_model_prediction_bucket":
            le = float(s.labels["le"])
            assert s.value == sum(1 for p in preds if p <= le), s


def test_a_model_that_cannot_load_exits_1_with_one_error_line(servers: dict[str, Server]) -> None:
    server = servers["missing"]
    with pytest.raises(StepError) as caught:
        probe.wait_healthy(server.deployment(), server.proc, timeout=90)
    assert server.proc.wait(timeout=30) == 1
    errors = [ln for ln in server.err.read_text().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, server.err.read_text()
    assert errors[0].startswith("error: cannot load models:/nope/1: ")
    assert "nope" in errors[0].removeprefix("error: cannot load models:/nope/1: ")
    assert probe.last_log_line(server.deployment()) == errors[0][:300]  # the log's last line
    assert "exited (code 1)" in str(caught.value) and errors[0][:100] in str(caught.value)
