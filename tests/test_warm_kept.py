"""The warm interpreter a home keeps between runs (run/warm.py, ``TASKYARD_WARM_IDLE`` > 0).

Real processes: kept helpers on abstract unix sockets, runners that come and go (one killed
with SIGKILL mid-step), a connection from another user, the idle end, a helper superseded by
another of the same home. Every helper a test starts is stopped by its pid at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskyard.run.executor import Invocation, SubprocessExecutor
from taskyard.run.warm import (
    HELPER_ENV,
    WarmProcess,
    _address,
    helper_name,
    idle_seconds,
    kept,
    spawn_detached,
    stop_kept,
)
from tests.test_warm_executor import MODULES, ROOT, SPEC, gone, wait_for


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone(pid)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home whose kept helper is stopped by its pid afterwards (the tests' helpers idle
    out after 30 s at most, should one get past this)."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("TASKYARD_HOME", str(h))
    yield h
    pid = stop_kept(h)
    if pid is not None:
        wait_gone(pid, 10)


def executor(idle: float = 30) -> SubprocessExecutor:
    ex = SubprocessExecutor(grace=2, warm=True, warm_modules=MODULES, warm_idle=idle)
    assert ex.warm is not None and ex.warm.name, ex.warm and ex.warm.why
    assert ex.warm.ready(120), ex.warm.why
    return ex


def step(ex: SubprocessExecutor, tmp: Path, *args: str) -> tuple[int | None, dict, object]:
    inv = Invocation(
        task="t", spec=SPEC, image=SPEC.image, command=SPEC.command, args=args,
        env={"WARM_TEST_X": "1"}, workspaces={}, results_dir=tmp, cwd=ROOT,
    )  # fmt: skip
    log = tmp / f"step-{time.monotonic_ns()}.log"
    with log.open("ab") as out:
        proc = ex.start(inv, out)
    code = proc.wait(60)
    return code, json.loads(log.read_text().splitlines()[0]), proc


def test_the_next_run_of_the_home_finds_the_same_helper_loaded(home: Path, tmp_path: Path) -> None:
    first = executor()
    code, seen, proc = step(first, tmp_path, "--exit", "0")
    assert code == 0 and isinstance(proc, WarmProcess) and seen["env"] == {"WARM_TEST_X": "1"}
    pid, name = first.warm.pid, first.warm.name
    first.close()
    assert not gone(pid), "a kept helper ended with its run"
    assert kept(home) == (name, pid)

    started = time.monotonic()
    second = SubprocessExecutor(grace=2, warm=True, warm_modules=MODULES, warm_idle=30)
    assert second.warm is not None and second.warm.pid == pid
    assert second.warm.ready(5) and time.monotonic() - started < 2, "the kept helper reloaded"
    code, seen, proc = step(second, tmp_path, "--exit", "3")
    assert code == 3 and isinstance(proc, WarmProcess) and seen["argv"] == ["--exit", "3"]
    # every step, cold or warm, is told which helper may fork its model server
    env = second._env({})
    assert env[HELPER_ENV] == name
    assert helper_name(home, {k: v for k, v in env.items() if k != HELPER_ENV}) == name
    second.close()
    assert stop_kept(home) == pid and wait_gone(pid, 10)


def test_a_sigkilled_runner_takes_its_steps_the_helper_stays(home: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "run.out").open("wb") as out:
        runner = subprocess.Popen(
            [sys.executable, "-m", "tests.warm_driver", str(data), "--idle", "30", "--grace", "2"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(data / "pids", 120)
        step_pid, grandchild = map(int, (data / "pids").read_text().split())
        found = kept(home)
        assert found is not None
        helper = found[1]
        assert (
            int(Path(f"/proc/{step_pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == helper
        )
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        # SIGTERM to the group when the runner's connection closes, SIGKILL after the grace (2 s)
        assert wait_gone(step_pid, 8), "the step outlived its runner"
        assert wait_gone(grandchild, 8), "the step's own child outlived its runner"
        assert not gone(helper), "the kept helper ended with a runner"
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()


def test_it_ends_when_idle_for_its_idle_time(home: Path, tmp_path: Path) -> None:
    ex = executor(idle=1)
    pid = ex.warm.pid
    assert step(ex, tmp_path, "--exit", "0")[0] == 0
    time.sleep(1.5)
    assert not gone(pid), "it ended while a runner was connected"
    ex.close()
    assert wait_gone(pid, 10), "still there 10 s after its 1 s of idle time"


def test_a_superseded_helper_ends_once_idle(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = executor()
    old_pid = old.warm.pid
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # read at import: another helper
    new = executor()
    assert new.warm.name != old.warm.name and new.warm.pid != old_pid
    assert not gone(old_pid), "it ended while its runner was still connected"
    old.close()
    assert wait_gone(old_pid, 10), "the home's runners use another helper now"
    assert kept(home) == (new.warm.name, new.warm.pid)
    new.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_another_user_gets_nothing(home: Path) -> None:
    ex = executor()
    probe = textwrap.dedent(f"""
        import os, socket
        os.setgid(65534); os.setuid(65534)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect({_address(ex.warm.name)!r})
        s.settimeout(10)
        print(repr(s.recv(64)))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "b''"  # closed without "ready": nothing to ask it
    ex.close()


def test_a_detached_fork_is_for_the_model_server_only(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex = executor()
    monkeypatch.setenv(HELPER_ENV, ex.warm.name)
    with (tmp_path / "d.log").open("ab") as out:
        argv = [sys.executable, "-m", "tests.warm_step", "--exit", "0"]
        assert spawn_detached(argv, dict(os.environ), ROOT, out.fileno()) is None
    # the helper checks too: a request for another module gets no pid
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ctl.connect(_address(ex.warm.name))
    assert ctl.recv(64) == b"ready"
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    request = {"argv": argv, "env": dict(os.environ), "cwd": str(ROOT), "detached": True}
    with (tmp_path / "d.log").open("ab") as out:
        socket.send_fds(ctl, [json.dumps(request).encode()], [theirs.fileno(), out.fileno()])
    theirs.close()
    mine.settimeout(10)
    assert mine.recv(64) == b""
    for s in (mine, ctl):
        s.close()
    ex.close()


def test_idle_seconds_reads_the_variable() -> None:
    assert idle_seconds({}) == 600
    assert idle_seconds({"TASKYARD_WARM_IDLE": "0"}) == 0
    assert idle_seconds({"TASKYARD_WARM_IDLE": " 90 "}) == 90
    for bad in ("soon", "-1", "inf", "nan"):
        with pytest.raises(ValueError, match="TASKYARD_WARM_IDLE"):
            idle_seconds({"TASKYARD_WARM_IDLE": bad})


def test_a_bad_idle_value_is_a_usage_error(tmp_path: Path) -> None:
    env = {**os.environ, "TASKYARD_HOME": str(tmp_path), "TASKYARD_WARM_IDLE": "soon"}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "taskyard"), "run", "train-eval-deploy"],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: TASKYARD_WARM_IDLE='soon'")
