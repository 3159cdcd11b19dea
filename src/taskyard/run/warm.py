"""A warm interpreter for the local subprocess executor: a forkserver with the heavy modules loaded.

Why: a step spends seconds importing mlflow, pandas, scikit-learn and skops before it does
anything (measured in benchmarks/main_job.py), and the main job runs five such steps. A helper
process imports them once; each step is then a ``fork`` of it that runs the step module exactly
as ``python -m`` would (``runpy.run_module(mod, run_name="__main__", alter_sys=True)``).

The step contract is unchanged: the same argv, env, cwd, log, exit code and session as
:meth:`SubprocessExecutor.start`. Only ``python -m <allowed module> …`` run by the runner's own
interpreter, with the same ``PYTHON*`` environment as the helper, goes warm; anything else (and
everything while the helper is still loading) takes the normal subprocess path.

Safety, after multiprocessing's forkserver model
(https://docs.python.org/3/library/multiprocessing.html#contexts-and-start-methods): forking a
process that has threads is unsafe (a lock held by another thread stays locked in the child),
and the runner has a thread per task. So the helper is a separate, fresh, single-threaded
interpreter (spawned, not forked), it checks ``/proc/self/task`` after loading and refuses to
serve when an import started a thread, and it forks on request over a unix socket; the log fd
travels with ``socket.send_fds``.

Lifetime: the helper gets SIGTERM when the runner dies (``PR_SET_PDEATHSIG``) and exits when its
control socket closes; every step child asks for SIGTERM when the helper dies, so a SIGKILLed
runner takes helper, step and the step's group with it, as on the cold path.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What a step imports before it does its work (train, evaluate, promote, deploy, run-tests).
# Optional ones are skipped when missing; xgboost and torch are not preloaded on purpose: only a
# project on those frameworks needs them (skops imports torch anyway when it is installed:
# scikit-learn's all_estimators walks sklearn.externals.array_api_compat.torch).
PRELOAD = (
    "pandas",
    "sklearn",
    "sklearn.datasets",
    "sklearn.model_selection",
    "mlflow",
    "mlflow.pyfunc",
    "mlflow.sklearn",
    "mlflow.models",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "skops.io",
    "taskyard.steps._mlflow",
    "taskyard.steps.train",
    "taskyard.steps.evaluate",
    "taskyard.steps.promote",
    "taskyard.steps.deploy",
    "taskyard.steps.run_tests",
    "taskyard.steps.git_clone",
    "taskyard.steps.report",
)
DEFAULT_MODULES = ("taskyard.steps.",)
# Steps that cost seconds cold: one that starts while the helper still loads waits for it
# (at most WAIT_S). The others run cold meanwhile: git-clone and report import nothing heavy;
# run-tests and train check their cache before any heavy import, and on a re-run of a commit
# they hit (~0.2 s and ~2 s cold, against up to ~5 s of waiting for the helper). evaluate
# waits: on the run after a promotion it judges against the new champion, a miss, and a miss
# started cold is slower than the wait, as it shares the CPU with the loading helper.
WAIT_FOR = (
    "taskyard.steps.evaluate",
    "taskyard.steps.promote",
    "taskyard.steps.deploy",
    "taskyard.steps.detect_drift",
)
WAIT_S = 30.0
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PR_SET_PDEATHSIG = 1


def python_env(env: dict[str, str]) -> dict[str, str]:
    """The variables the interpreter reads at start-up: a step whose differ goes cold."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON")}


def step_module(argv: list[str], executable: str, allowed: tuple[str, ...]) -> str | None:
    """``python -m MOD …`` with an allowed MOD: the module; anything else: None."""
    if len(argv) < 3 or argv[0] != executable or argv[1] != "-m":
        return None
    mod = argv[2]
    if not _MODULE.match(mod) or not any(mod.startswith(p) for p in allowed):
        return None
    return mod


# --------------------------------------------------------------------------- runner side


class WarmProcess:
    """A step forked by the helper: in its own session, like :class:`SubprocessProcess`.

    The helper is its parent and reaps it; the exit code (Popen's convention: ``-N`` for a
    signal) arrives on this step's own socket.
    """

    def __init__(self, conn: socket.socket, pid: int, grace: float) -> None:
        self.conn = conn
        self.pid = pid
        self.grace = grace
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def wait(self, timeout: float | None = None) -> int | None:
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            ready, _, _ = select.select([self.conn], [], [], timeout)
            if not ready:
                return None
            data = self.conn.recv(64)
            self.conn.close()
            if data.startswith(b"exit "):
                self.returncode = int(data.split()[1])
            else:  # the helper died under the step: make sure the group is gone
                self._signal(signal.SIGKILL)
                self.returncode = -signal.SIGKILL
            return self.returncode

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        timer = threading.Timer(self.grace, self._kill)
        timer.daemon = True
        timer.start()

    def _kill(self) -> None:
        if self.returncode is None:
            self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.returncode is not None:
            return  # reaped: the pid may belong to someone else now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


class WarmServer:
    """The runner's handle on the helper. Start it from a thread that lives as long as the
    runner (the main thread): the kernel's parent-death signal follows the forking thread."""

    def __init__(self, env: dict[str, str], preexec: Callable[[], None] | None = None) -> None:
        self.env = dict(env)
        self.state = "starting"  # -> ready | off (with self.why)
        self.why = ""
        self._lock = threading.Lock()
        self._ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "taskyard.run.warm", str(theirs.fileno())],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
                preexec_fn=preexec,
            )
        finally:
            theirs.close()

    def ready(self, wait: float = 0) -> bool:
        """True once the helper has loaded; waits at most ``wait`` seconds for it."""
        if self.state == "starting" and wait > 0:  # wait unlocked: others need not
            with contextlib.suppress(OSError, ValueError):
                select.select([self._ctl], [], [], wait)
        with self._lock:
            if self.state == "starting":
                ready, _, _ = select.select([self._ctl], [], [], 0)
                if ready:
                    msg = self._ctl.recv(4096).decode(errors="replace")
                    if msg == "ready":
                        self.state = "ready"
                    else:
                        self._off(msg or "the warm interpreter exited while loading")
            return self.state == "ready"

    def _off(self, why: str) -> None:
        self.state, self.why = "off", why
        with contextlib.suppress(OSError):
            self._ctl.close()

    def spawn(self, mod_argv: list[str], env: dict[str, str], cwd: Path, log_fd: int,
              grace: float) -> WarmProcess | None:  # fmt: skip
        """Fork a step (``mod_argv``: ``[executable, "-m", MOD, *args]``); None: go cold."""
        request = json.dumps({"argv": mod_argv, "env": env, "cwd": str(cwd)}).encode()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            if self.state != "ready":
                mine.close()
                theirs.close()
                return None
            try:
                socket.send_fds(self._ctl, [request], [theirs.fileno(), log_fd])
            except OSError as e:
                self._off(f"the warm interpreter is gone: {e}")
                mine.close()
                return None
            finally:
                theirs.close()
        ready, _, _ = select.select([mine], [], [], 30)
        data = mine.recv(64) if ready else b""
        if not data.startswith(b"pid "):
            mine.close()
            return None  # the helper could not fork: the cold path runs the step
        return WarmProcess(mine, int(data.split()[1]), grace)

    def close(self) -> None:
        """Stop the helper (its running steps get their parent-death SIGTERM)."""
        with self._lock:
            self._off(self.why or "closed")
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- helper side


@dataclass
class _Request:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_fd: int


def _die_with_parent(parent: int) -> None:
    """SIGTERM to this process when ``parent`` dies (the runner for the helper, the helper
    for a step); exit at once if it is already gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(128 + signal.SIGTERM)


def _can_restore_priority() -> bool:
    """Whether this process may go back from SCHED_IDLE to normal scheduling (sched(7):
    root, or an RLIMIT_NICE that allows nice 0)."""
    import resource

    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20


@contextlib.contextmanager
def _idle_priority() -> Any:
    """Load at SCHED_IDLE: on a busy machine the first tasks (clone, the tests) keep the CPU;
    the forked steps get normal scheduling back. Only where it can be restored."""
    idle = getattr(os, "SCHED_IDLE", None)
    if idle is None or not _can_restore_priority():
        yield
        return
    try:
        os.sched_setscheduler(0, idle, os.sched_param(0))
    except OSError:
        yield
        return
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _preload() -> None:
    with _idle_priority():
        _load()


def _load() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as steps/_mlflow.setup does
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    # MLflow maps every installed distribution to its modules (importlib.metadata's
    # packages_distributions, a walk of the whole venv) once per process, the first time it
    # checks a model's requirements (log_model, load_model). It is the same venv for every
    # step: map it once here. Private, so only if it is there.
    with contextlib.suppress(Exception):
        from mlflow.utils import requirements_utils

        requirements_utils._init_modules_to_packages_map()


def _exit_code(status: int) -> int:
    """A wait status as Popen reports it: the exit code, or ``-N`` for signal N."""
    return os.waitstatus_to_exitcode(status)


def serve(ctl: socket.socket) -> _Request | None:
    """Load, then fork a step per request. Returns in the CHILD only (its request); the
    helper itself returns None when the runner closes the control socket."""
    _preload()
    # Python threads would hold interpreter-level locks across the fork: refuse. The native
    # worker threads numpy/scipy's OpenBLAS and jemalloc start at load time are fork-aware
    # (they register pthread_atfork handlers and re-create their pools in the child), which
    # is what multiprocessing's forkserver with a numpy preload relies on as well.
    if threading.active_count() != 1:
        extra = threading.active_count() - 1
        ctl.send(f"an import started {extra} Python thread(s): forking is unsafe".encode())
        return None
    ctl.send(b"ready")
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    replies: dict[int, socket.socket] = {}
    while True:
        readable, _, _ = select.select([ctl, wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                reply = replies.pop(pid, None)
                if reply is not None:
                    with contextlib.suppress(OSError):
                        reply.send(f"exit {_exit_code(status)}".encode())
                    reply.close()
        if ctl not in readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 4)
        except OSError:
            data, fds = b"", []
        if not data:
            return None  # the runner is gone or done
        reply = socket.socket(fileno=fds[0])
        log_fd = fds[1]
        msg = json.loads(data)
        pid = os.fork()
        if pid == 0:  # the step: drop everything of the helper's
            signal.set_wakeup_fd(-1)
            for fd in (wake_r, wake_w):
                os.close(fd)
            for other in (ctl, reply, *replies.values()):
                other.close()
            return _Request(msg["argv"], msg["env"], msg["cwd"], log_fd)
        os.close(log_fd)
        replies[pid] = reply
        with contextlib.suppress(OSError):
            reply.send(f"pid {pid}".encode())


def _become_step(req: _Request, helper: int) -> Any:
    """In the forked child: set up exactly what SubprocessExecutor.start gives a process
    (session, parent-death signal, stdio on the log, cwd, env, argv), then run the module as
    ``python -m`` does."""
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()
    _die_with_parent(helper)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(req.log_fd, 1)
    os.dup2(req.log_fd, 2)
    for fd in (devnull, req.log_fd):
        os.close(fd)
    os.chdir(req.cwd)
    os.environ.clear()
    os.environ.update(req.env)
    import random

    random.seed()  # also done by random's own at-fork hook; numpy's global state is not
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    # A cold `python -m` has not imported the step module itself (runpy would warn); its
    # dependencies stay loaded, which is the point.
    sys.modules.pop(req.argv[2], None)
    sys.argv = [req.argv[0], *req.argv[3:]]
    sys.path[0] = os.getcwd()  # `python -m`: the current directory first
    import runpy

    return runpy.run_module(req.argv[2], run_name="__main__", alter_sys=True)


def main() -> None:
    ctl = socket.socket(fileno=int(sys.argv[1]))
    helper = os.getpid()
    _die_with_parent(os.getppid())  # armed by the runner's preexec too; checked here again
    req = serve(ctl)
    if req is not None:
        _exit(_run(req, helper))


def _run(req: _Request, helper: int) -> int:
    """The step's exit code as the interpreter would make it (Py_HandleSystemExit, the
    default excepthook); an uncaught KeyboardInterrupt is -SIGINT."""
    try:
        _become_step(req, helper)
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        return -signal.SIGINT
    except BaseException:
        sys.excepthook(*sys.exc_info())
        return 1
    return 0


def _exit(code: int) -> None:
    """End as Py_FinalizeEx does, in its order: join non-daemon threads, atexit handlers,
    flush stdio; then exit without tearing down every preloaded module (that teardown has no
    observable effect and costs a warm step about a second)."""
    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter calls at exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if code == -signal.SIGINT:  # as CPython does for an uncaught KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


if __name__ == "__main__":
    main()
