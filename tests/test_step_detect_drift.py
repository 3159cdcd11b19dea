"""The detect-drift step on the bundled example: real training, a real registry (SQLite), the
real CLI as a subprocess.

The champion is the example trained by the train step and aliased with ``MlflowClient``; its
reference profile is the one train logged. The statistic itself is tests/test_drift_stats.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from taskyard import project
from taskyard.ml import profile
from taskyard.steps import detect_drift as drift_step
from taskyard.steps._results import env_name
from tests.mlflowutil import migrated_store
from tests.test_step_evaluate import GOOD, NAME, crown
from tests.test_step_train import train, workspace

RESULTS = ("drifted", "score", "drifted-features", "report")


@pytest.fixture
def store(tmp_path, monkeypatch, tmp_path_factory):
    import mlflow

    uri = migrated_store(tmp_path, monkeypatch, tmp_path_factory)
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture
def ws(tmp_path):
    return workspace(tmp_path)


def cli(ws: Path, out: Path, *argv: str) -> subprocess.CompletedProcess:
    """``python -m taskyard.steps.detect_drift`` with its results written under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{env_name(r): str(out / r) for r in RESULTS}}
    return subprocess.run(
        [sys.executable, "-m", "taskyard.steps.detect_drift", "--source", str(ws),
         "--subdirectory", "repo", *argv],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip


def results(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in out.iterdir()}


def data(ws: Path):
    proj = project.load(ws, "repo")
    frame = project.load_frame(proj)
    return frame[project.feature_columns(proj, frame)]


def test_train_logs_the_reference_profile(ws, store):
    import mlflow

    record = train(ws, "--overrides", GOOD)
    assert record["reference_profile"] == profile.ARTIFACT == "reference_profile.json"
    run_id = record["results"]["run-id"]
    ref = profile.for_model(run_id)
    proj = project.load(ws, "repo")
    split = project.holdout(proj, project.load_frame(proj))
    assert ref["features"] == list(split.x_train.columns)  # what the model was fitted on
    assert ref["rows"] == len(split.x_train)
    assert all(ref["columns"][f]["kind"] == "numeric" for f in ref["features"])
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert profile.ARTIFACT in files
    # The registered version finds the same profile, by alias and by number.
    crown(record["results"]["model-uri"])
    assert profile.for_model(f"models:/{NAME}@champion") == ref
    assert profile.for_model(f"models:/{NAME}/1") == ref


def test_a_model_without_a_profile_says_retrain(store):
    from tests.mlflowutil import log_sklearn_model

    _, run_id = log_sklearn_model()
    with pytest.raises(Exception, match="trained before taskyard logged reference profiles"):
        profile.for_model(run_id)


@pytest.mark.slow
def test_the_cli_on_the_data_on_a_shifted_file_and_on_a_bad_path(tmp_path, ws, store):
    import mlflow

    crown(train(ws, "--overrides", GOOD)["results"]["model-uri"])
    n = len(data(ws).columns)  # 13 measurements and 3 ratios

    # (a) the project's data as it is now: the training distribution, no drift.
    got = cli(ws, tmp_path / "a")
    assert got.returncode == 0, got.stderr
    r = results(tmp_path / "a")
    assert r["drifted"] == "false" and r["score"] == "0" and r["drifted-features"] == ""
    assert r["report"] == "artifacts/drift/report.json"
    assert got.stdout.strip().splitlines()[-1].startswith("no drift (score 0)")
    report = json.loads((ws / r["report"]).read_text())
    assert report["champion_version"] == "1" and report["current"].startswith("project data")
    assert report["drifted"] is False and len(report["features"]) == n == 16
    assert not list((ws / "artifacts" / "drift").glob("*.png"))

    # (b) a CSV with one feature moved by 2 sd: drifted, that feature only, with its plot.
    frame = data(ws)
    frame["proline"] += 2 * frame["proline"].std()
    frame.to_csv(ws / "repo" / "current.csv", index=False)
    got = cli(ws, tmp_path / "b", "--current", "current.csv")
    assert got.returncode == 0, got.stderr
    r = results(tmp_path / "b")
    assert r["drifted"] == "true" and r["drifted-features"] == "proline"
    assert float(r["score"]) == pytest.approx(1 / n, rel=1e-3)
    assert (ws / "artifacts" / "drift" / "proline.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((ws / r["report"]).read_text())
    assert report["features"]["proline"]["drifted"] and report["features"]["proline"]["psi"] > 1
    assert report["current"] == str(ws / "repo" / "current.csv")
    record = json.loads((ws / "artifacts" / "detect-drift.json").read_text())
    assert record["results"] == r

    runs = mlflow.search_runs(
        experiment_names=[NAME], filter_string="tags.`taskyard.step` = 'detect-drift'",
        order_by=["start_time DESC"], output_format="list",
    )  # fmt: skip
    assert len(runs) == 2
    metrics = runs[0].data.metrics
    assert metrics["drift_score"] == pytest.approx(1 / n) and metrics["drifted_features"] == 1
    assert metrics["psi.proline"] > 1 and metrics["psi.alcohol"] < 0.1
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id, "drift")}
    assert logged == {"drift/report.json", "drift/proline.png"}

    # (d) a bad --current: exit 1, one line on stderr.
    for bad, says in (("nope.csv", "not found"), ("current.txt", "use a .csv")):
        got = cli(ws, tmp_path / "d", "--current", bad)
        assert got.returncode == 1
        last = got.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and says in last and "Traceback" not in got.stderr


@pytest.mark.slow
def test_the_cli_without_a_champion_says_train_first(tmp_path, ws, store):
    got = cli(ws, tmp_path / "c")
    assert got.returncode == 0, got.stderr
    r = results(tmp_path / "c")
    assert r["drifted"] == "true" and r["score"] == "1" and r["drifted-features"] == ""
    report = json.loads((ws / r["report"]).read_text())
    assert report["drifted"] is True and "no champion yet" in report["reason"]


class _Window(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        code = 200 if self.path == "/monitoring/window" else 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body if code == 200 else b"{}")

    def log_message(self, *args) -> None:
        pass


def test_the_model_servers_window_as_the_current_batch(tmp_path, ws, store):
    crown(train(ws, "--overrides", GOOD)["results"]["model-uri"])
    frame = data(ws)
    frame["alcohol"] -= 3 * frame["alcohol"].std()
    columns = {c: frame[c].tolist() for c in frame.columns}
    columns["hue"][:5] = [None] * 5  # missing values in a window are null
    _Window.body = json.dumps({"columns": columns, "rows": len(frame)}).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Window)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        args = drift_step.build_parser().parse_args(
            ["--source", str(ws), "--subdirectory", "repo", "--current",
             f"{base}/monitoring/window", "--report-dir", "out/drift"]
        )  # fmt: skip
        drift_step.run(args)
        report = json.loads((ws / "out" / "drift" / "report.json").read_text())
        assert report["drifted"] is True and report["drifted_features"] == ["alcohol"]
        assert report["features"]["hue"]["n_current"] == len(frame) - 5
        assert report["current"] == f"{base}/monitoring/window"
        args.current = f"{base}/elsewhere"
        with pytest.raises(Exception, match="HTTP 404"):
            drift_step.run(args)
    finally:
        server.shutdown()
        server.server_close()


def test_parser_takes_every_catalog_arg():
    from taskyard.catalog.tasks import detect_drift as catalog

    argv = [a.replace("$(", "x") for a in catalog.TASK.args]
    for i, a in enumerate(argv):
        if a.startswith("xparams.") and argv[i - 1] in ("--alpha", "--min-psi", "--max-share"):
            argv[i] = "0.1"
    args = drift_step.build_parser().parse_args(argv)
    assert args.current == "xparams.current)" and args.alpha == 0.1
    assert {p.name for p in catalog.TASK.params} >= {
        "current", "model-name", "champion-alias", "alpha", "min-psi", "max-share",
    }  # fmt: skip


def test_a_live_model_servers_window(ws, store):
    """--current URL against a real model server (python -m taskyard.serving), fed shifted rows."""
    import signal
    import time
    import urllib.request

    from taskyard.deployments import free_port

    version = crown(train(ws, "--overrides", GOOD)["results"]["model-uri"])
    port = free_port("127.0.0.1")
    server = subprocess.Popen(
        [sys.executable, "-m", "taskyard.serving", "--model-uri", f"models:/{NAME}/{version}",
         "--port", str(port), "--drift-min-rows", "50", "--drift-window", "300"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the model server did not become ready"
            time.sleep(0.3)
        frame = data(ws).sample(n=300, replace=True, random_state=0)
        frame["magnesium"] += 3 * frame["magnesium"].std()
        body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
        req = urllib.request.Request(
            f"{base}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
        out = ws.parent / "live-results"
        got = cli(ws, out, "--current", f"{base}/monitoring/window")
        assert got.returncode == 0, got.stderr
        r = results(out)
        assert r["drifted"] == "true" and r["drifted-features"].split(",")[0] == "magnesium"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
