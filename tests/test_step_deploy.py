"""deploy with real model servers (MLflow's scoring app) on 127.0.0.1 (slow: seconds each).

Every server is stopped by its process group in a finalizer, found through the per-test
TASKYARD_HOME in its environment, so a failing test never leaves one behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from taskyard import deployments, probe
from taskyard.steps import promote
from taskyard.steps._results import env_name
from tests import mlflowutil

MODEL = "demo-model"
RESULTS = ("url", "model-version", "smoke-prediction")


def servers_of(home: Path) -> list[tuple[int, int]]:
    """(pid, pgid) of every model server process whose environment names this home."""
    marker = f"TASKYARD_HOME={home}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmd = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        server = b"taskyard.serving" in cmd or b"mlflow" in cmd or b"uvicorn" in cmd
        if state != "Z" and marker in environ and server:
            found.append((int(entry.name), os.getpgid(int(entry.name))))
    return found


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    h = tmp_path / "home"
    mlflowutil.use_store(monkeypatch, h)
    yield h
    for _, pgid in servers_of(h):  # whatever the test did, no server outlives it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def register(source: Path, uri: str) -> str:
    argv = ["--source", str(source), "--model-uri", uri, "--model-name", MODEL]
    return promote.promote(promote.build_parser().parse_args(argv))["results"]["model-version"]


def run_deploy(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    """The step as the engines run it: a subprocess, results in files."""
    out = tmp_path / f"results-{len(list(tmp_path.glob('results-*')))}"
    env = dict(os.environ, **{env_name(r): str(out / r) for r in RESULTS})
    proc = subprocess.run(
        [sys.executable, "-m", "taskyard.steps.deploy", "--source", str(tmp_path / "ws"),
         "--model-name", MODEL, "--health-timeout", "90", *extra],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    results = {r: (out / r).read_text() for r in RESULTS if (out / r).exists()}
    return proc, results


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status


def predict(url: str, rows: list[list[float]]) -> list:
    body = {"dataframe_split": {"columns": mlflowutil.FEATURES, "data": rows}}
    req = urllib.request.Request(
        url + "/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["predictions"]


def refused(url: str) -> bool:
    try:
        get(url + "/ping")
    except (urllib.error.URLError, OSError):
        return True
    return False


def aliases() -> dict[str, str]:
    import mlflow

    return {k: str(v) for k, v in mlflow.MlflowClient().get_registered_model(MODEL).aliases.items()}


@pytest.mark.slow
def test_smoke_only_deploy_stops_its_server(home: Path, tmp_path: Path) -> None:
    register(tmp_path / "ws", mlflowutil.log_sklearn_model(seed=1)[0])
    proc, results = run_deploy(tmp_path, "--keep-serving", "false")
    assert proc.returncode == 0, proc.stderr
    assert results["model-version"] == "1"
    assert results["url"].startswith("http://127.0.0.1:")
    smoke = json.loads(results["smoke-prediction"])
    assert len(smoke["predictions"]) == 2  # the logged input example has two rows
    assert refused(results["url"])
    assert servers_of(home) == []
    assert deployments.list_deployments() == []
    record = json.loads((tmp_path / "ws" / "artifacts" / "deploy.json").read_text())
    assert record["results"] == results and record["kept_serving"] is False


@pytest.mark.slow
def test_keep_serving_then_a_second_deploy_replaces_the_first(home: Path, tmp_path: Path) -> None:
    register(tmp_path / "ws", mlflowutil.log_sklearn_model(seed=1)[0])
    proc, first = run_deploy(tmp_path, "--keep-serving", "true")
    assert proc.returncode == 0, proc.stderr
    assert get(first["url"] + "/ping") == 200
    assert predict(first["url"], [[2.0, 1.0, 0.0], [-2.0, -1.0, 0.0]]) == [1, 0]
    old = deployments.load(MODEL)
    assert old is not None and deployments.alive(old)
    assert (old.version, old.url, old.pgid) == ("1", first["url"], old.pid)
    assert Path(old.log).is_file()

    register(tmp_path / "ws", mlflowutil.log_sklearn_model(seed=2)[0])
    proc, second = run_deploy(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert second["model-version"] == "2" and second["url"] != first["url"]
    assert refused(first["url"]) and not deployments.alive(old)
    assert predict(second["url"], [[3.0, 0.0, 0.0]]) == [1]
    live = deployments.list_deployments()
    assert [(d.version, d.url) for d in live] == [("2", second["url"])]
    assert {pgid for _, pgid in servers_of(home)} == {live[0].pgid}

    stopped = deployments.stop(MODEL)
    assert [d.version for d in stopped] == ["2"]
    assert refused(second["url"])
    assert servers_of(home) == [] and deployments.load(MODEL) is None


@pytest.mark.slow
def test_failing_smoke_test_rolls_the_alias_back(home: Path, tmp_path: Path) -> None:
    register(tmp_path / "ws", mlflowutil.log_sklearn_model(seed=1)[0])
    register(tmp_path / "ws", mlflowutil.log_broken_model()[0])
    assert aliases() == {"champion": "2", "previous-champion": "1"}

    proc, results = run_deploy(tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: deploy of {MODEL} version 2 failed: smoke request got HTTP")
    assert "broken on purpose" in last
    assert last.endswith("rolled 'champion' back to version 1")
    assert "Traceback" not in proc.stderr
    assert results == {}
    assert aliases() == {"champion": "1", "previous-champion": "1"}
    assert servers_of(home) == [] and deployments.load(MODEL) is None
    record = json.loads((tmp_path / "ws" / "artifacts" / "deploy.json").read_text())
    assert "rolled 'champion' back to version 1" in record["error"]


@pytest.mark.slow
def test_a_failing_first_champion_loses_the_alias(home: Path, tmp_path: Path) -> None:
    register(tmp_path / "ws", mlflowutil.log_broken_model()[0])
    assert aliases() == {"champion": "1"}
    proc, results = run_deploy(tmp_path, "--keep-serving", "false")
    assert proc.returncode == 1 and results == {}
    last = proc.stderr.strip().splitlines()[-1]
    assert last.endswith(
        "no 'previous-champion' to roll back to: removed 'champion' from version 1"
    )
    assert aliases() == {}  # the next evaluation promotes on the absolute threshold alone
    assert servers_of(home) == [] and deployments.load(MODEL) is None


def test_stale_records_are_cleaned_and_never_kill_a_stranger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        dep = deployments.Deployment(
            name=MODEL, model=MODEL, version="1", alias="champion", model_uri="models:/x/1",
            host="127.0.0.1", port=1, url="http://127.0.0.1:1", pid=stranger.pid,
            pgid=stranger.pid, cmdline=deployments.serve_command("models:/x/1", "127.0.0.1", 1),
            log=str(tmp_path / "log"),
        )  # fmt: skip
        deployments.save(dep)  # pid reused by another command line
        assert not deployments.alive(dep)
        assert deployments.list_deployments() == []
        assert deployments.load(MODEL) is None
        deployments.save(dep)
        assert deployments.stop(MODEL) == []
        assert stranger.poll() is None  # the unrelated process still runs
    finally:
        stranger.kill()
        stranger.wait()
    deployments.save(dep)  # pid gone
    assert deployments.list_deployments() == [] and deployments.load(MODEL) is None


def test_payload_synthesized_from_the_signature() -> None:
    import numpy as np
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    cols = Schema([ColSpec("double", "a"), ColSpec("long", "b"), ColSpec("string", "c")])
    assert probe.payload_from_schema(cols) == {
        "dataframe_split": {"columns": ["a", "b", "c"], "data": [[0.0, 0, "a"]]}
    }
    tensor = Schema([TensorSpec(np.dtype("float32"), (-1, 2))])
    assert probe.payload_from_schema(tensor) == {"inputs": [[0.0, 0.0]]}


def post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(
        url + "/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def start_deploy(tmp_path: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "taskyard.steps.deploy", "--source", str(tmp_path / "ws"),
            "--model-name", MODEL, "--health-timeout", "90", *extra]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(check, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def starting_records() -> list[deployments.Deployment]:
    return [d for d in deployments.records(MODEL) if d.state == deployments.STARTING]


@pytest.mark.slow
def test_sigterm_during_deploy_rolls_back_and_leaves_no_unlisted_server(
    home: Path, tmp_path: Path
) -> None:
    register(tmp_path / "ws", mlflowutil.log_sklearn_model(seed=1)[0])
    proc, first = run_deploy(tmp_path)
    assert proc.returncode == 0, proc.stderr
    register(tmp_path / "ws", mlflowutil.log_sklearn_model(seed=2)[0])
    assert aliases() == {"champion": "2", "previous-champion": "1"}

    step = start_deploy(tmp_path, "--model-version", "2")
    wait_for(lambda: starting_records() != [])  # recorded before it is waited on
    listed = {d.pgid for d in deployments.list_deployments()}
    assert {pgid for _, pgid in servers_of(home)} <= listed  # even now, nothing unlisted
    step.send_signal(signal.SIGTERM)
    _, err = step.communicate(timeout=60)
    assert step.returncode == 128 + signal.SIGTERM, err
    assert "deploy of demo-model version 2 interrupted; rolled 'champion' back to version 1" in err
    assert "error: terminated (SIGTERM)" in err and "Traceback" not in err
    assert aliases() == {"champion": "1", "previous-champion": "1"}
    live = deployments.list_deployments()
    assert [(d.version, d.state) for d in live] == [("1", "serving")]
    assert {pgid for _, pgid in servers_of(home)} == {live[0].pgid}
    assert predict(first["url"], [[3.0, 0.0, 0.0]]) == [1]  # the old server never stopped

    # The model server's input limits: 413 over the body cap, 400 for deep JSON.
    status, body = post(first["url"], b" " * (11 << 20))
    assert status == 413 and "request body over" in body["message"]
    status, body = post(first["url"], b"[" * 50_000 + b"]" * 50_000)
    assert status == 400 and "nested deeper than 64" in body["message"]
    rows = {"dataframe_split": {"columns": mlflowutil.FEATURES, "data": [[1.0, 1.0, 0.0]]}}
    assert post(first["url"], json.dumps(rows).encode()) == (200, {"predictions": [1]})


@pytest.mark.slow
def test_sigkill_during_deploy_leaves_a_listed_server_that_stop_stops(
    home: Path, tmp_path: Path
) -> None:
    register(tmp_path / "ws", mlflowutil.log_sklearn_model(seed=1)[0])
    step = start_deploy(tmp_path)
    wait_for(lambda: starting_records() != [])
    step.kill()
    step.communicate(timeout=30)
    live = deployments.list_deployments()
    assert [(d.version, d.state) for d in live] == [("1", "starting")]
    assert {pgid for _, pgid in servers_of(home)} <= {live[0].pgid}
    cli = subprocess.run(
        [sys.executable, "-m", "taskyard.cli", "deployments", "stop", MODEL],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "stopped demo-model version 1 (starting," in cli.stdout
    assert servers_of(home) == [] and deployments.list_deployments() == []


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--port", "99999", "--port must be a port number (0-65535, 0 = any free one)"),
        ("--port", "-1", "--port must be a port number"),
        ("--health-timeout", "soon", "--health-timeout must be a number of seconds > 0"),
        # A cluster target with the local SQLite store: no model server pod could load from it.
        ("--target", "kubernetes", "--target kubernetes: the model server loads the model"),
    ],
)
def test_bad_params_roll_back_with_one_line(
    home: Path, tmp_path: Path, flag: str, value: str, message: str
) -> None:
    register(tmp_path / "ws", mlflowutil.log_sklearn_model(seed=1)[0])
    register(tmp_path / "ws", mlflowutil.log_sklearn_model(seed=2)[0])
    proc, results = run_deploy(tmp_path, flag, value)
    assert proc.returncode == 1 and results == {}
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: deploy of {MODEL} version 2 failed: {message}")
    assert last.endswith("rolled 'champion' back to version 1")
    assert "Traceback" not in proc.stderr
    assert aliases() == {"champion": "1", "previous-champion": "1"}
    assert servers_of(home) == []


def test_a_recorded_server_is_its_pid_and_start_time_not_only_its_command_line(
    tmp_path: Path,
) -> None:
    """A server forked by the warm interpreter shows that interpreter's command line, which
    every warm step shares: the start time tells the recorded process from a later one."""
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        ticks = deployments.start_ticks(proc.pid)
        assert ticks > 0
        dep = deployments.Deployment(
            name="m", model="m", version="1", alias="champion", model_uri="models:/m/1",
            host="127.0.0.1", port=1, url="http://127.0.0.1:1", pid=proc.pid, pgid=proc.pid,
            cmdline=["sleep", "30"], log=str(tmp_path / "log"), start_ticks=ticks,
        )  # fmt: skip
        assert deployments.alive(dep)
        dep.start_ticks = ticks - 1  # the pid, reused by a process started later
        assert not deployments.alive(dep)
        dep.start_ticks = 0  # an older record: the command line alone decides
        assert deployments.alive(dep)
    finally:
        proc.kill()
        proc.wait()
