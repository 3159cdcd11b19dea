"""The ``taskyard`` console script, run as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASKYARD = str(Path(sys.executable).parent / "taskyard")
SYN = "tests/run_synthetic.py"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = dict(os.environ)
    out["TASKYARD_HOME"] = str(tmp_path / "home")
    out.pop("MLFLOW_TRACKING_URI", None)
    out.pop("TASKYARD_DEBUG", None)
    out["COLUMNS"] = "160"
    return out


def ty(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TASKYARD, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_run_succeeds_and_prints_a_summary(env: dict[str, str]) -> None:
    r = ty(env, "run", f"{SYN}:CHAIN", "-p", "greeting=hello", "-p", "suffix=?")
    assert r.returncode == 0, r.stderr
    assert " a Running" in r.stdout and " c Succeeded" in r.stdout  # plain lines: not a TTY
    assert "out=hello+b+c" in r.stdout
    assert "final = hello+b+c?" in r.stdout
    assert "Succeeded in" in r.stdout
    assert "\x1b[" not in r.stdout


def test_failed_run_exits_1(env: dict[str, str]) -> None:
    r = ty(env, "run", f"{SYN}:FAILING")
    assert r.returncode == 1
    assert "boom Failed" in r.stdout and "Failed (Failed: task boom failed)" in r.stdout
    run_id = json.loads(next((Path(env["TASKYARD_HOME"]) / "runs").glob("*/run.json")).read_text())[
        "id"
    ]
    # the README's promise: every expected failure ends with one `error:` line on stderr
    assert r.stderr.splitlines() == [
        f"error: run {run_id} failed: task 'boom' failed: step boom failed on purpose"
    ]


def test_module_form_from_the_current_folder(env: dict[str, str]) -> None:
    r = ty(env, "run", "tests.run_synthetic:WHEN", "-p", "go=yes", "--max-parallel", "1")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", f"{SYN}:CHAIN", "-p", "greeting=x", "-p", "colour=red"],
            "error: unknown param 'colour' for pipeline 'chain' (known: greeting, suffix)",
        ),
        (["run", f"{SYN}:CHAIN"], "error: missing required param 'greeting'"),
        (["run", f"{SYN}:CHAIN", "-p", "greeting"], "error: -p expects KEY=VALUE"),
        (["run", f"{SYN}:NOPE"], "has no attribute 'NOPE'"),
        (["run", f"{SYN}:STEP"], "is a TaskSpec, not a PipelineSpec"),
        (["run", "tests/missing.py:X"], "error: no such file"),
        (["run", "train-eval-deplo"], "error: unknown pipeline 'train-eval-deplo'"),
        (
            ["run", "train-eval-deploy", "-p", "repo-url=x", "-p", "deploy-port=80a"],
            "error: param 'deploy-port' of pipeline 'train-eval-deploy': '80a' is not an integer",
        ),
        (
            ["run", "train-eval-deploy", "-p", "repo-url=x", "-p", "keep-serving=yes"],
            "'yes' is not one of true, false",
        ),
        (["run", f"{SYN}:CHAIN", "--max-parallel", "0"], "at least 1"),
        (["run", f"{SYN}:CHAIN", "--workspace", "data=/no/such/dir", "-p", "greeting=x"], ""),
        (["run"], "error: the following arguments are required: PIPELINE"),
        (["frobnicate"], "error: argument COMMAND: invalid choice"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    env: dict[str, str], args: list[str], message: str
) -> None:
    r = ty(env, *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert message in lines[0]
    assert not (Path(env["TASKYARD_HOME"]) / "runs").exists() or not any(
        (Path(env["TASKYARD_HOME"]) / "runs").iterdir()
    )


def test_debug_shows_the_traceback(env: dict[str, str]) -> None:
    r = ty(env, "run", f"{SYN}:CHAIN", "--debug")
    assert r.returncode == 2
    assert "Traceback" in r.stderr and r.stderr.strip().endswith(
        "error: missing required param 'greeting' for pipeline 'chain' (-p greeting=VALUE)"
    )


def test_runs_list_and_show(env: dict[str, str]) -> None:
    assert ty(env, "runs").stdout.startswith("no runs yet")
    assert ty(env, "run", f"{SYN}:CHAIN", "-p", "greeting=hey").returncode == 0
    assert ty(env, "run", f"{SYN}:FAILING").returncode == 1
    runs = sorted((Path(env["TASKYARD_HOME"]) / "runs").iterdir())
    ids = [json.loads((p / "run.json").read_text())["id"] for p in runs]
    listing = ty(env, "runs")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "pipeline", "status"]
    assert lines[1].startswith("failing-") and "Failed" in lines[1]  # newest first
    assert lines[2].startswith("chain-") and "Succeeded" in lines[2]
    chain = next(i for i in ids if i.startswith("chain-"))
    show = ty(env, "runs", "show", chain)
    assert show.returncode == 0 and "param greeting = hey" in show.stdout
    assert "out=hey+b" in show.stdout and "final = hey+b+c!" in show.stdout
    log = ty(env, "runs", "show", "failing", "--log", "boom")
    assert log.returncode == 0
    assert log.stdout == "step boom value \nerror: step boom failed on purpose\n"
    missing = ty(env, "runs", "show", "nope")
    assert missing.returncode == 1 and missing.stderr.startswith("error: no run 'nope'")


def test_catalog_listings(env: dict[str, str]) -> None:
    tasks = ty(env, "tasks")
    assert tasks.returncode == 0
    for name in ("git-clone", "run-tests", "train", "evaluate", "promote", "deploy", "report"):
        assert f"\n{name} " in tasks.stdout
    pipes = ty(env, "pipelines")
    assert pipes.returncode == 0
    assert "train-eval-deploy" in pipes.stdout and "clone → test" in pipes.stdout


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_stops_the_tasks_and_skips_finally(
    env: dict[str, str], sig: signal.Signals, code: int
) -> None:
    proc = subprocess.Popen(
        [TASKYARD, "run", f"{SYN}:HANG_FOREVER"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    runs = Path(env["TASKYARD_HOME"]) / "runs"
    deadline = time.time() + 90  # generous: image builds may share the 2 cores
    pid_files: list[Path] = []
    while not pid_files and time.time() < deadline:
        pid_files = list(runs.glob("*/workspaces/data/hang.pid")) if runs.exists() else []
        time.sleep(0.05)
    assert pid_files, "the hang task never started"
    time.sleep(0.1)
    grandchild = int(pid_files[0].read_text())
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    how = "interrupted" if sig == signal.SIGINT else "terminated (SIGTERM)"
    assert err.strip().splitlines()[-1].endswith(f" cancelled: {how}"), err
    record = json.loads((pid_files[0].parents[2] / "run.json").read_text())
    assert record["status"] == "Cancelled"
    assert record["tasks"]["hang"]["state"] == "Cancelled"
    assert record["tasks"]["final"]["state"] == "Cancelled"
    status = Path(f"/proc/{grandchild}/status")
    for _ in range(100):
        if not status.exists() or "State:\tZ" in status.read_text():
            break
        time.sleep(0.05)
    else:
        pytest.fail("the task's grandchild survived Ctrl-C")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ui_serves_the_home_store(env: dict[str, str]) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [TASKYARD, "ui", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        body = ""
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    body = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert body.strip() == "OK", "the MLflow UI did not come up"
        assert (Path(env["TASKYARD_HOME"]) / "mlflow" / "mlflow.db").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
