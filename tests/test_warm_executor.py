"""The warm interpreter (run/warm.py) gives a step exactly what the cold subprocess path gives.

Real processes throughout: the helper interpreter, forked steps, a grandchild, SIGTERM/SIGKILL
to a process group, and a runner killed with SIGKILL. Each observable (exit code, log, argv,
env, cwd, session, stdin) is compared between ``SubprocessExecutor()`` and
``SubprocessExecutor(warm=True)`` on the same step (tests/warm_step.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskyard.run.executor import Invocation, SubprocessExecutor, SubprocessProcess
from taskyard.run.warm import WarmProcess, step_module
from taskyard.spec import TaskSpec

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("tests.warm_step",)
SPEC = TaskSpec(
    name="warm-step",
    display_name="warm step",
    description="tests/warm_step.py",
    image="python:3.11-slim",
    command=("python", "-m", "tests.warm_step"),
)


def gone(pid: int) -> bool:
    """No such process, or a zombie (it runs no more code)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status


def wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never appeared")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def warm() -> Iterator[SubprocessExecutor]:
    os.environ["WARM_RUNNER_ONLY"] = "at the helper's start"
    ex = SubprocessExecutor(grace=2, warm=True, warm_modules=MODULES)
    del os.environ["WARM_RUNNER_ONLY"]  # a step started now must not see it
    assert ex.warm is not None
    deadline = time.monotonic() + 120
    while not ex.warm.ready():
        assert ex.warm.state == "starting", ex.warm.why
        assert time.monotonic() < deadline, "the warm interpreter did not load in 120 s"
        time.sleep(0.1)
    yield ex
    ex.close()


def run(
    ex: SubprocessExecutor, log: Path, *args: str, **env: str
) -> tuple[int | None, str, object]:
    inv = Invocation(
        task="t", spec=SPEC, image=SPEC.image, command=SPEC.command, args=args,
        env={"WARM_TEST_X": "1", **env}, workspaces={}, results_dir=log.parent, cwd=ROOT,
    )  # fmt: skip
    with log.open("ab") as out:
        out.write(b"=== attempt 1/1 ===\n")
        out.flush()
        proc = ex.start(inv, out)
    code = proc.wait(60)
    return code, log.read_text(), proc


@pytest.mark.parametrize(
    "args",
    [
        ("--exit", "0", "--free", "a b"),
        ("--exit", "3"),
        ("--message-exit", "error: a message"),
        ("--raise-error",),
    ],
    ids=["ok", "code", "message", "exception"],
)
def test_same_exit_code_log_argv_env_cwd_as_the_cold_path(
    tmp_path: Path, warm: SubprocessExecutor, args: tuple[str, ...]
) -> None:
    cold_code, cold_log, cold_proc = run(SubprocessExecutor(), tmp_path / "cold.log", *args)
    warm_code, warm_log, warm_proc = run(warm, tmp_path / "warm.log", *args)
    assert isinstance(cold_proc, SubprocessProcess) and isinstance(warm_proc, WarmProcess)
    assert warm_code == cold_code
    cold_lines, warm_lines = cold_log.splitlines(), warm_log.splitlines()
    seen = json.loads(warm_lines[1])
    assert seen == json.loads(cold_lines[1])
    assert seen["argv"] == list(args) and seen["argv0"] == "warm_step.py"
    assert seen["name"] == "__main__" and seen["cwd"] == str(ROOT) == seen["path0"]
    assert seen["env"] == {"WARM_TEST_X": "1"} and not seen["has_runner_only"]
    assert seen["session_leader"] and seen["stdin"] == ""
    if "--raise-error" in args:
        assert cold_code == 1
        assert warm_lines[-1] == cold_lines[-1] == "ValueError: boom"
        assert "Traceback (most recent call last):" in warm_log
    else:
        assert warm_lines == cold_lines
    if "--message-exit" in args:
        assert cold_code == 1 and warm_lines[-1] == "error: a message"


def test_an_env_set_after_the_helper_started_reaches_the_step(
    tmp_path: Path, warm: SubprocessExecutor
) -> None:
    code, log, proc = run(warm, tmp_path / "warm.log", WARM_TEST_LATE="late")
    assert code == 0 and isinstance(proc, WarmProcess)
    assert json.loads(log.splitlines()[1])["env"] == {"WARM_TEST_X": "1", "WARM_TEST_LATE": "late"}


def test_other_commands_take_the_cold_path(tmp_path: Path, warm: SubprocessExecutor) -> None:
    assert step_module([sys.executable, "-m", "tests.warm_step"], sys.executable, MODULES)
    assert not step_module(["/usr/bin/python3", "-m", "tests.warm_step"], sys.executable, MODULES)
    assert not step_module([sys.executable, "-c", "x"], sys.executable, MODULES)
    assert not step_module([sys.executable, "-m", "pytest"], sys.executable, MODULES)
    # A different interpreter start-up environment (PYTHON*) goes cold too.
    code, _, proc = run(warm, tmp_path / "w.log", PYTHONHASHSEED="7")
    assert code == 0 and isinstance(proc, SubprocessProcess)


def test_stop_kills_the_steps_group_after_the_grace(
    tmp_path: Path, warm: SubprocessExecutor
) -> None:
    pids = tmp_path / "pids"
    inv = Invocation(
        task="t", spec=SPEC, image=SPEC.image, command=SPEC.command,
        args=("--sleep", "60", "--pids", str(pids)), env={}, workspaces={},
        results_dir=tmp_path, cwd=ROOT,
    )  # fmt: skip
    with (tmp_path / "log").open("ab") as out:
        proc = warm.start(inv, out)
    assert isinstance(proc, WarmProcess)
    wait_for(pids, 30)
    step, grandchild = map(int, pids.read_text().split())
    assert proc.wait(0.2) is None  # a timeout: still running
    proc.stop()  # what the runner does on a task timeout
    assert proc.wait(10) == -signal.SIGTERM  # no SIGTERM handler: killed, as a cold step is
    deadline = time.monotonic() + 5
    while not (gone(step) and gone(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(step) and gone(grandchild)


def test_a_sigkilled_runner_leaves_no_warm_step_behind(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # Steps run in the run's folder: tests.warm_step is found through PYTHONPATH, cold or warm.
    env = {**os.environ, "TASKYARD_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    with (tmp_path / "run.out").open("wb") as out:
        runner = subprocess.Popen(
            [sys.executable, "-m", "tests.warm_driver", str(data)], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(data / "pids", 120)  # the helper loads first (the driver waits)
        step, grandchild = map(int, (data / "pids").read_text().split())
        helpers = [
            int(p) for p in subprocess.run(
                ["pgrep", "-P", str(runner.pid), "-f", "taskyard.run.warm"],
                capture_output=True, text=True,
            ).stdout.split()
        ]  # fmt: skip
        assert len(helpers) == 1
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(map(gone, (step, grandchild, *helpers))):
            time.sleep(0.05)
        assert gone(helpers[0]), "the warm interpreter outlived its runner by 5 s"
        assert gone(step), "the step outlived its runner by 5 s"
        assert gone(grandchild), "the step's own child outlived the runner by 5 s"
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
