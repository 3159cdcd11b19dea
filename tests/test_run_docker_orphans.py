"""``--executor docker``: a SIGKILLed runner leaves no container behind.

The ``docker run`` client gets SIGTERM when the runner dies (parent-death signal), proxies it
to the container (sig-proxy, on by default), ``--init`` hands it to the step, and ``--rm``
removes the container. Real daemon (tests/dockerd.py), real base image (the debootstrap one
``taskyard images`` uses), a step that is plain ``sleep``.
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

from taskyard.images import DEBOOTSTRAP_BASE, ensure_base
from taskyard.run.docker import running
from tests.dockerd import Dockerd, unavailable

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TASKYARD = str(Path(sys.executable).parent / "taskyard")

PIPELINE = f"""
from taskyard.spec import PipelineSpec, PipelineTask, TaskSpec

SLEEP = TaskSpec(
    name="sleep",
    display_name="sleep",
    description="Sleeps for a minute in the base image.",
    image={DEBOOTSTRAP_BASE!r},
    command=("sleep", "60"),
)
PIPELINE = PipelineSpec(
    name="docker-sleepy",
    display_name="docker-sleepy",
    description="one long containerised task",
    tasks=(PipelineTask(name="sleep", task=SLEEP),),
)
"""


@pytest.fixture(scope="module")
def daemon() -> Iterator[Dockerd]:
    reason = unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the docker tests: {reason}")
        pytest.skip(reason)
    d = Dockerd().start()
    try:
        yield d
    finally:
        d.stop()


def _running_containers(run_id: str, env: dict[str, str]) -> list[str]:
    proc = subprocess.run(
        ["docker", "ps", "--filter", f"label=taskyard.run={run_id}", "--format", "{{.Names}}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.split()


def test_sigkill_of_the_runner_stops_and_removes_the_container(
    daemon: Dockerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", daemon.host)
    ensure_base()
    pipeline = tmp_path / "docker_sleepy.py"
    pipeline.write_text(PIPELINE)
    env = {**daemon.env(), "TASKYARD_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    runner = subprocess.Popen(
        [TASKYARD, "run", "--executor", "docker", f"{pipeline}:PIPELINE"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        runs = tmp_path / "home" / "runs"
        deadline = time.monotonic() + 120
        names: list[str] = []
        run_id = ""
        while not names and time.monotonic() < deadline:
            ids = [p.name for p in runs.iterdir()] if runs.is_dir() else []
            if ids:
                run_id = ids[0]
                names = _running_containers(run_id, env)
            time.sleep(0.2)
        assert names, "the task's container never started"
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        deadline = time.monotonic() + 15
        while running(run_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert running(run_id) == [], "the container outlived its runner"
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    shown = subprocess.run(
        [TASKYARD, "runs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert "Abandoned" in shown.stdout
    record = json.loads((runs / run_id / "run.json").read_text())
    assert record["status"] == "Abandoned"
