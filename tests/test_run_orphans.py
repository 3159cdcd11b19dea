"""A runner killed with SIGKILL leaves no step behind, and its run is recorded as Abandoned.

Everything is real: ``taskyard run`` as a subprocess, a step built on the steps' own CLI
helper (steps/_cli.py) with a grandchild, SIGKILL to the runner, and the processes and
``run.json`` checked afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASKYARD = str(Path(sys.executable).parent / "taskyard")

# A step as the catalog's are (steps/_cli.main: SIGTERM -> cleanup, its group stopped). The first
# attempt fails at once, so the step that is killed is a retry started by the same worker thread.
STEP = """
import os, subprocess, sys, time
from pathlib import Path
from taskyard.steps import _cli

def run(args):
    data = Path(args.data)
    first = data / "attempt-1"
    if not first.exists():
        first.touch()
        print("error: the first attempt fails on purpose", file=sys.stderr)
        raise SystemExit(1)
    child = subprocess.Popen(["sleep", "60"])
    (data / "pids.tmp").write_text(f"{os.getpid()} {child.pid}")
    (data / "pids.tmp").rename(data / "pids")
    print("sleeping", flush=True)
    time.sleep(60)

p = _cli.parser("sleeper", "sleeps for a minute")
p.add_argument("--data", required=True)
_cli.main(run, p)
"""

PIPELINE = """
from taskyard.spec import PipelineSpec, PipelineTask, PipelineWorkspace, TaskSpec, Workspace

SLEEPER = TaskSpec(
    name="sleeper",
    display_name="sleeper",
    description="Fails once, then sleeps 60 s with a grandchild.",
    image="python:3.11-slim",
    command=("python", {step!r}, "--data", "$(workspaces.data.path)"),
    workspaces=(Workspace(name="data"),),
)
PIPELINE = PipelineSpec(
    name="sleepy",
    display_name="sleepy",
    description="one long task and one after it",
    workspaces=(PipelineWorkspace(name="data"),),
    tasks=(
        PipelineTask(name="sleep", task=SLEEPER, workspaces={{"data": "data"}}, retries=1),
        PipelineTask(
            name="after", task=SLEEPER, workspaces={{"data": "data"}}, run_after=("sleep",)
        ),
    ),
)
"""


def gone(pid: int) -> bool:
    """No such process, or a zombie waiting for a reaper (it runs no more code)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "State:\tZ" in status


def wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never appeared")
        time.sleep(0.05)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = dict(os.environ)
    out["TASKYARD_HOME"] = str(tmp_path / "home")
    out.pop("MLFLOW_TRACKING_URI", None)
    out["COLUMNS"] = "200"
    return out


def test_sigkill_of_the_runner_stops_the_step_and_the_run_is_marked_abandoned(
    tmp_path: Path, env: dict[str, str]
) -> None:
    step = tmp_path / "sleeper_step.py"
    step.write_text(textwrap.dedent(STEP))
    pipeline = tmp_path / "sleepy.py"
    pipeline.write_text(PIPELINE.format(step=str(step)))
    with (tmp_path / "run.out").open("wb") as out:
        runner = subprocess.Popen(
            [TASKYARD, "run", f"{pipeline}:PIPELINE"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our own group: nothing here signals pytest's
        )
    try:
        runs = Path(env["TASKYARD_HOME"]) / "runs"
        wait_for(runs, 60)
        (run_dir,) = list(runs.iterdir())
        wait_for(run_dir / "workspaces" / "data" / "pids", 90)
        step_pid, grandchild = map(int, (run_dir / "workspaces/data/pids").read_text().split())
        before = json.loads((run_dir / "run.json").read_text())
        assert before["status"] == "Running" and before["pid"] == runner.pid
        assert before["pid_start"] and before["host"]
        assert before["tasks"]["sleep"]["attempts"] == 2  # the retry is the one running

        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        deadline = time.monotonic() + 5
        while not (gone(step_pid) and gone(grandchild)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(step_pid), "the step outlived its runner by 5 s"
        assert gone(grandchild), "the step's own child outlived the runner by 5 s"
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()

    # run.json still says Running: the runner died before it could write anything else.
    assert json.loads((run_dir / "run.json").read_text())["status"] == "Running"
    listing = subprocess.run(
        [TASKYARD, "runs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0, listing.stderr
    (row,) = [line for line in listing.stdout.splitlines() if line.startswith("sleepy-")]
    assert "Abandoned" in row and "the runner process died" in row
    record = json.loads((run_dir / "run.json").read_text())  # rewritten once, by that reader
    assert record["status"] == "Abandoned"
    assert record["reason"] == "the runner process died (killed?)"
    assert record["ended"] is not None
    assert record["tasks"]["sleep"]["state"] == "Cancelled"
    assert record["tasks"]["sleep"]["reason"] == "runner died"
    assert record["tasks"]["sleep"]["ended"] is not None
    assert record["tasks"]["after"]["state"] == "Cancelled"
    show = subprocess.run(
        [TASKYARD, "runs", "show", record["id"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert show.returncode == 0, show.stderr
    assert "Abandoned (the runner process died (killed?))" in show.stdout
    assert json.loads((run_dir / "run.json").read_text()) == record  # once, not every read
