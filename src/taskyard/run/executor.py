"""How a resolved task becomes a running process: the Executor protocol and its subprocess form.

An executor answers two questions. ``layout``: where does the step see its workspaces and its
results folder (host paths here; mount points in a container)? The resolver substitutes
``$(workspaces.W.path)`` and ``$(results.R.path)`` with those. ``start``: run the resolved
command with stdout+stderr going to the task's log, and hand back a :class:`Process` the
scheduler can wait on and stop. A docker executor implements the same two methods.

A step dies with its runner. Each child asks the kernel for SIGTERM when its parent dies
(Linux ``PR_SET_PDEATHSIG``, set between fork and exec by :func:`die_with_parent`), so a
SIGKILLed ``taskyard run`` leaves no step behind: the step's SIGTERM handler (steps/_cli.py)
cleans up and takes its own process group with it. The kernel sends the signal when the
*thread* that forked the child exits, not only the process: the runner starts every attempt
of a task from that task's worker thread, which lives until the attempt has been waited for
(run/runner.py ``_attempts``), so the signal only comes when the runner itself is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from taskyard.run.warm import (
    DEFAULT_MODULES,
    HELPER_ENV,
    WAIT_FOR,
    WAIT_S,
    WarmServer,
    idle_seconds,
    python_env,
    step_module,
)
from taskyard.spec import TaskSpec


@dataclass(frozen=True)
class Layout:
    """Paths as the step sees them: ``workspaces`` maps task workspace -> path ("" = unbound)."""

    workspaces: dict[str, str]
    results_dir: str


@dataclass(frozen=True)
class Invocation:
    """A task with every reference resolved, plus the host folders an executor must provide."""

    task: str  # the pipeline task name
    spec: TaskSpec
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: dict[str, str]
    workspaces: dict[str, Path | None]  # task workspace -> host folder (None: unbound)
    results_dir: Path  # host folder the results land in
    cwd: Path
    params: dict[str, str] = field(default_factory=dict)


class Process(Protocol):
    """A started step. ``wait`` returns the exit code, or None when ``timeout`` ran out."""

    def wait(self, timeout: float | None = None) -> int | None: ...

    def stop(self) -> None:
        """Terminate the step and everything it started; safe to call from another thread."""


class Executor(Protocol):
    name: str

    def gpus(self) -> int:
        """How many GPUs a step can use (the runner applies ``Resources.gpu_fallback``)."""
        ...

    def layout(self, workspaces: dict[str, Path | None], results_dir: Path) -> Layout: ...

    def start(self, inv: Invocation, log: BinaryIO) -> Process: ...


class SubprocessProcess:
    """A child in its own session, so stopping it reaches its whole process group."""

    def __init__(self, popen: subprocess.Popen[bytes], grace: float) -> None:
        self.popen = popen
        self.grace = grace

    def wait(self, timeout: float | None = None) -> int | None:
        if timeout is not None and _pidfd_wait(self.popen.pid, timeout):
            timeout = 0  # pidfd said it exited (or the time is up): just reap
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        timer = threading.Timer(self.grace, self._kill)
        timer.daemon = True
        timer.start()

    def _kill(self) -> None:
        if self.popen.returncode is None:
            self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


def _pidfd_wait(pid: int, timeout: float) -> bool:
    """Block until the child exits or ``timeout`` passes, without Popen.wait's 50 ms polling.

    False when pidfds are unavailable (old kernel): the caller falls back to Popen.wait.
    """
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return False
    try:
        select.select([fd], [], [], max(timeout, 0))
    finally:
        os.close(fd)
    return True


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # looked up once, here: the child between fork and exec only calls it


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``sig`` when this process dies; None off Linux.

    No race with a parent that dies during the fork: after asking for the signal the child
    checks that its parent is still the process that forked it, and exits at once if not.
    The child only calls prctl (bound beforehand) and getppid: no import, no logging, nothing
    that needs a lock another runner thread might have held at fork time.
    """
    if _PRCTL is None:
        return None
    prctl, parent = _PRCTL, os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(128 + int(sig))  # the runner died before the signal was armed

    return preexec


def host_gpus() -> int:
    """NVIDIA GPUs the driver exposes, honouring ``CUDA_VISIBLE_DEVICES`` (no CUDA import)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    try:
        found = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        found = 0
    if visible is not None and found:
        return min(found, len([v for v in visible.split(",") if v.strip()]))
    return found


class SubprocessExecutor:
    """Runs each step as a local subprocess with the same interpreter as the runner.

    ``python`` as command[0] means ``sys.executable``, and the interpreter's bin folder goes
    first on PATH, so steps find the venv's console scripts (mlflow, pytest) as in an image.
    ``warm=True``: ``python -m taskyard.steps.…`` steps are forked from a helper interpreter
    that has the heavy modules loaded, with the same argv, env, cwd, log and session
    (run/warm.py); :meth:`close` stops it.
    """

    name = "subprocess"

    def __init__(
        self,
        grace: float = 10.0,
        warm: bool = False,
        warm_modules: tuple[str, ...] | None = None,
        warm_idle: float | None = None,
    ) -> None:
        # SIGTERM, then SIGKILL after `grace` s: room for a step's cleanup (deploy rolls back
        # and stops its server). Kubernetes gives a pod 30 s (terminationGracePeriodSeconds).
        # The docker executor waits 10 s too.
        self.grace = grace
        self.bin_dir = os.path.dirname(sys.executable)
        self.warm: WarmServer | None = None
        self.warm_modules = warm_modules or DEFAULT_MODULES
        if warm:
            # Started here, in the thread that builds the executor (the CLI's main thread):
            # a per-run helper's parent-death signal follows that thread. It loads while the
            # first tasks run cold; a kept one (``warm_idle`` > 0, default TASKYARD_WARM_IDLE
            # or 600 s) is found ready by the next run of this home.
            from taskyard.home import home

            env = self._env({})
            idle = idle_seconds(env) if warm_idle is None else warm_idle
            self.warm = WarmServer(env, preexec=die_with_parent(), home=home(), idle=idle)

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        env.update(extra)
        env["PATH"] = self.bin_dir + os.pathsep + env.get("PATH", "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.warm is not None and self.warm.name:  # cold and warm steps alike
            env[HELPER_ENV] = self.warm.name
        return env

    def close(self) -> None:
        """Stop the warm interpreter, if any (the runner's end)."""
        if self.warm is not None:
            self.warm.close()
            self.warm = None

    def gpus(self) -> int:
        return host_gpus()

    def layout(self, workspaces: dict[str, Path | None], results_dir: Path) -> Layout:
        return Layout(
            workspaces={k: str(v) if v is not None else "" for k, v in workspaces.items()},
            results_dir=str(results_dir),
        )

    def start(self, inv: Invocation, log: BinaryIO) -> Process:
        argv = [*inv.command, *inv.args]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        env = self._env(inv.env)
        warm = self._start_warm(argv, env, inv.cwd, log)
        if warm is not None:
            return warm
        popen = subprocess.Popen(
            argv,
            cwd=inv.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        return SubprocessProcess(popen, self.grace)

    def _start_warm(
        self, argv: list[str], env: dict[str, str], cwd: Path, log: BinaryIO
    ) -> Process | None:
        """Fork the step from the warm interpreter when it may: the same argv, env, cwd and
        session; None means the normal subprocess path (run/warm.py says when)."""
        server = self.warm
        mod = step_module(argv, sys.executable, self.warm_modules)
        if server is None or mod is None or python_env(env) != python_env(server.env):
            return None
        if not server.ready(WAIT_S if mod in WAIT_FOR else 0):
            return None
        log.flush()
        return server.spawn(argv, env, cwd, log.fileno(), self.grace)
