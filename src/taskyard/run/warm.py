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

Lifetime. Per run (``TASKYARD_WARM_IDLE=0``): the helper gets SIGTERM when the runner dies
(``PR_SET_PDEATHSIG``) and exits when its control socket closes. Kept (the default, 600 s): the
helper outlives the run, like Gradle's daemon (https://docs.gradle.org/current/userguide/
gradle_daemon.html), so the next run of this home forks its steps from an interpreter that
has already loaded; it listens on an abstract unix socket named for this home and everything
that decides what it loaded (interpreter, ``sys.path`` and its folders' mtimes, taskyard's
files, the variables imports read), checks that a peer is the same user (``SO_PEERCRED``)
both ways, and exits after ``TASKYARD_WARM_IDLE`` seconds without a runner, at once when idle
and another helper has become this home's current one, or when the home is gone. Either way
every step child asks for SIGTERM when the helper dies, and a step whose runner's connection
closes before it ends gets SIGTERM on its process group (SIGKILL after the runner's grace),
so a SIGKILLed runner takes the step and the step's group with it, as on the cold path.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
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
    "taskyard.steps.select_best",
    "taskyard.steps.detect_drift",
    "taskyard.catalog",
)
DEFAULT_MODULES = ("taskyard.steps.",)
# Steps that cost seconds cold: one that starts while the helper still loads waits for it
# (at most WAIT_S). The others run cold meanwhile: git-clone and report import nothing heavy,
# and run-tests runs pytest in an interpreter of its own (its cache check is ~0.2 s cold).
# train and evaluate wait even though a cache hit needs little: the hit still loads the
# project's data to hash it (the example's loader imports scikit-learn, ~1.5 s cold), and a
# miss started cold shares the CPU with the loading helper. On a run whose home kept its
# helper, nothing waits: it is loaded.
WAIT_FOR = (
    "taskyard.steps.train",
    "taskyard.steps.evaluate",
    "taskyard.steps.promote",
    "taskyard.steps.deploy",
    "taskyard.steps.detect_drift",
    "taskyard.steps.select_best",
)
WAIT_S = 30.0
IDLE_ENV = "TASKYARD_WARM_IDLE"
DEFAULT_IDLE_S = 600.0
# Variables the preloaded modules (or the interpreter, the loader, BLAS) read while they are
# imported: a helper loaded under other values is another helper.
_IMPORT_ENV = (
    "PYTHON", "LD_", "OMP_", "OPENBLAS_", "MKL_", "NUMEXPR_", "NUMPY_", "SCIPY_", "SKLEARN_",
    "JOBLIB_", "MLFLOW_", "TORCH", "CUDA", "PATH", "VIRTUAL_ENV", "HOME", "TMPDIR", "LANG",
    "LC_", "TZ",
)  # fmt: skip
_CURRENT = "current"  # in <home>/warm: the name of the helper the last runner of the home used
# Set in every step's environment (cold or warm alike) by a runner with a kept helper: a step
# may ask that helper for a long-lived process of its own (spawn_detached).
HELPER_ENV = "TASKYARD_WARM_HELPER"
# What a step may start detached from the helper: the local model server, which outlives the
# step and the run (deployments.start), and costs seconds of the same imports cold.
DETACHED_MODULES = ("taskyard.serving",)
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PR_SET_PDEATHSIG = 1


def python_env(env: dict[str, str]) -> dict[str, str]:
    """The variables the interpreter reads at start-up: a step whose differ goes cold."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON")}


def idle_seconds(env: dict[str, str]) -> float:
    """``TASKYARD_WARM_IDLE``: seconds a helper waits for the next run; 0: it ends with its run."""
    text = env.get(IDLE_ENV, "").strip()
    if not text:
        return DEFAULT_IDLE_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"{IDLE_ENV}={text!r}: expected a number of seconds >= 0 (0: per run)")
    return value


def _stamp(root: Path, pattern: str) -> list[tuple[str, int, int]]:
    """Name, size and mtime of each file: cheap, and any edit or reinstall changes it."""
    out = []
    for path in sorted(root.rglob(pattern)):
        with contextlib.suppress(OSError):
            st = path.stat()
            out.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return out


def helper_name(home: Path, env: dict[str, str]) -> str:
    """The kept helper for this home and for what a helper loads: another value, another one."""
    import taskyard

    folders = []
    for entry in sys.path:
        with contextlib.suppress(OSError):
            folders.append((entry, os.stat(entry or ".").st_mtime_ns))  # an install changes it
    what = {
        "home": str(home.expanduser().resolve()),
        "python": sys.executable,
        "path": folders,
        "preload": PRELOAD,
        "taskyard": _stamp(Path(taskyard.__file__).resolve().parent, "*.py"),
        "env": sorted((k, v) for k, v in env.items() if k.startswith(_IMPORT_ENV)),
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()
    return f"taskyard-warm-{digest[:32]}"


def _address(name: str) -> bytes:
    """Linux's abstract namespace: no file to leave behind, no path-length limit."""
    return b"\0" + name.encode()


def _peer(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a unix socket."""
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))  # fmt: skip
    return pid, uid


def _connect(name: str) -> socket.socket | None:
    """A control connection to a kept helper run by this user; None when there is none."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(_address(name))
        if _peer(sock)[1] != os.getuid():  # another user's process holds the name: not ours
            raise OSError("foreign helper")
    except OSError:
        sock.close()
        return None
    return sock


def kept(home: Path) -> tuple[str, int] | None:
    """The helper this home's runners use now (name, pid), if it is running."""
    try:
        name = (home.expanduser() / "warm" / _CURRENT).read_text().strip()
    except OSError:
        return None
    sock = _connect(name)
    if sock is None:
        return None
    with sock:
        return name, _peer(sock)[0]


def stop_kept(home: Path) -> int | None:
    """SIGTERM to this home's kept helper (steps it is running get theirs); its pid, or None."""
    found = kept(home)
    if found is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(found[1], signal.SIGTERM)
    return found[1]


def spawn_detached(argv: list[str], env: dict[str, str], cwd: Path, log_fd: int) -> int | None:
    """Fork ``python -m taskyard.serving …`` from this run's kept helper, as Popen with
    ``start_new_session`` would start it, but not tied to anyone's life: its pid, or None
    (no helper named in ``TASKYARD_WARM_HELPER``, still loading, another interpreter or
    environment): the caller starts it cold."""
    name = os.environ.get(HELPER_ENV, "")
    if not name or step_module(argv, sys.executable, DETACHED_MODULES) is None:
        return None
    if python_env(env) != python_env(dict(os.environ)):
        return None
    ctl = _connect(name)
    if ctl is None:
        return None
    with ctl:
        ready, _, _ = select.select([ctl], [], [], 1.0)
        if not ready or ctl.recv(4096) != b"ready":
            return None
        request = {"argv": argv, "env": env, "cwd": str(cwd), "detached": True}
        try:
            mine = _send_fork(ctl, request, log_fd)
        except OSError:
            return None
        with mine:
            return _pid_reply(mine)


def _send_fork(ctl: socket.socket, request: dict[str, Any], log_fd: int) -> socket.socket:
    """Send a fork request with the log and the far end of a new reply socket; the near end.
    OSError: the helper is gone."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        socket.send_fds(ctl, [json.dumps(request).encode()], [theirs.fileno(), log_fd])
    except OSError:
        mine.close()
        raise
    finally:
        theirs.close()
    return mine


def _pid_reply(mine: socket.socket, timeout: float = 30) -> int | None:
    """The forked pid the helper answers with; None: it could not fork (or did not answer)."""
    ready, _, _ = select.select([mine], [], [], timeout)
    data = mine.recv(64) if ready else b""
    return int(data.split()[1]) if data.startswith(b"pid ") else None


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
    runner (the main thread): the kernel's parent-death signal follows the forking thread.

    ``idle`` > 0 with a ``home``: connect to this home's kept helper, starting one (detached,
    in its own session) when there is none; ``idle`` = 0: a helper for this run only.
    """

    def __init__(
        self,
        env: dict[str, str],
        preexec: Callable[[], None] | None = None,
        home: Path | None = None,
        idle: float = 0.0,
    ) -> None:
        self.env = dict(env)
        self.state = "starting"  # -> ready | off (with self.why)
        self.why = ""
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.name = ""
        if idle > 0 and home is not None:
            self._keep(home, idle)
            return
        self._ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "taskyard.run.warm", "--fd", str(theirs.fileno())],
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
        self.pid = self.proc.pid

    def _keep(self, home: Path, idle: float) -> None:
        self.name = helper_name(home, self.env)
        ctl = _connect(self.name)
        if ctl is None:
            folder = home.expanduser() / "warm"
            folder.mkdir(parents=True, exist_ok=True)
            # Detached on purpose: it outlives this run. Two runners starting one at once is
            # fine: the second helper cannot bind the name and exits, both connect to the first.
            started = subprocess.Popen(
                [sys.executable, "-m", "taskyard.run.warm", "--listen", self.name,
                 "--idle", repr(idle), "--home", str(folder.resolve())],
                env=self.env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + 10  # it binds before it imports anything heavy
            while ctl is None and time.monotonic() < deadline:
                if started.poll() is not None and started.returncode != 0:
                    break
                time.sleep(0.01)
                ctl = _connect(self.name)
            _reap_later(started)
        if ctl is None:
            self._ctl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self.pid = 0
            self._off("could not reach or start the warm interpreter")
            return
        self._ctl = ctl
        self.pid = _peer(ctl)[0]
        with contextlib.suppress(OSError):  # which helper this home uses now (the others end)
            folder = home.expanduser() / "warm"
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{_CURRENT}.{os.getpid()}"
            tmp.write_text(self.name)
            tmp.replace(folder / _CURRENT)

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
        request = {"argv": mod_argv, "env": env, "cwd": str(cwd), "grace": grace}
        with self._lock:
            if self.state != "ready":
                return None
            try:
                mine = _send_fork(self._ctl, request, log_fd)
            except OSError as e:
                self._off(f"the warm interpreter is gone: {e}")
                return None
        pid = _pid_reply(mine)
        if pid is None:
            mine.close()
            return None  # the helper could not fork: the cold path runs the step
        return WarmProcess(mine, pid, grace)

    def close(self) -> None:
        """Leave the helper: a kept one stays for the next run; one of this run stops (its
        running steps get their parent-death SIGTERM)."""
        with self._lock:
            self._off(self.why or "closed")
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    """The kept helper is this runner's child until the runner exits: collect its exit status
    if it ends first, so it does not stay a zombie."""
    threading.Thread(target=proc.wait, daemon=True, name="warm-reaper").start()


# --------------------------------------------------------------------------- helper side


@dataclass
class _Request:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_fd: int
    detached: bool = False  # a long-lived process: it does not die with the helper


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
    # The step cache's key parts that are fixed for this interpreter's life (its files and
    # installs are part of the helper's name): computed once here, not once per step.
    with contextlib.suppress(Exception):
        from taskyard.steps import _cache

        _cache.code_hash()
        _cache.library_versions()


def _exit_code(status: int) -> int:
    """A wait status as Popen reports it: the exit code, or ``-N`` for signal N."""
    return os.waitstatus_to_exitcode(status)


def _loaded() -> bytes:
    """Load; ``ready``, or why this helper must not fork."""
    _preload()
    # Python threads would hold interpreter-level locks across the fork: refuse. The native
    # worker threads numpy/scipy's OpenBLAS and jemalloc start at load time are fork-aware
    # (they register pthread_atfork handlers and re-create their pools in the child), which
    # is what multiprocessing's forkserver with a numpy preload relies on as well.
    if threading.active_count() != 1:
        extra = threading.active_count() - 1
        return f"an import started {extra} Python thread(s): forking is unsafe".encode()
    return b"ready"


@dataclass
class _Step:
    reply: socket.socket
    conn: socket.socket
    grace: float
    kill_at: float = 0.0  # > 0: its runner is gone; SIGKILL to its group at this time


class _Helper:
    """The fork loop. Per run: one control connection, the helper ends with it. Kept: runners
    connect to ``listener``; the helper ends when idle (see the module docstring)."""

    def __init__(self, conns: list[socket.socket], listener: socket.socket | None = None,
                 idle: float = 0.0, folder: Path | None = None) -> None:  # fmt: skip
        self.conns = conns
        self.listener = listener
        self.idle = idle
        self.folder = folder
        self.steps: dict[int, _Step] = {}
        self.idle_since = time.monotonic()
        self.wake_r, wake_w = os.pipe()
        self.wake_w = wake_w
        os.set_blocking(wake_w, False)

    def run(self) -> _Request | None:
        """Returns in the CHILD only (its request); the helper itself returns None."""
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(b"ready")
        while True:
            if self._done():
                return None
            watched = [*self.conns, self.wake_r]
            if self.listener is not None:
                watched.append(self.listener)
            readable, _, _ = select.select(watched, [], [], self._timeout())
            now = time.monotonic()
            for pid, step in list(self.steps.items()):
                if step.kill_at and now >= step.kill_at:
                    _killpg(pid, signal.SIGKILL)
                    step.kill_at = 0.0
            if self.wake_r in readable:
                os.read(self.wake_r, 4096)
                self._reap()
            if self.listener is not None and self.listener in readable:
                self._accept()
            for conn in [c for c in self.conns if c in readable]:
                req = self._request(conn)
                if req is not None:
                    return req

    def _done(self) -> bool:
        if self.listener is None:
            return not self.conns  # per run: the runner is gone or done
        if self.conns or self.steps:
            return False
        if self.folder is None or not self.folder.is_dir():
            return True  # the home is gone
        with contextlib.suppress(OSError):
            if (self.folder / _CURRENT).read_text().strip() != self.name():
                return True  # superseded: the home's runners use another helper now
        return time.monotonic() - self.idle_since >= self.idle

    def name(self) -> str:
        assert self.listener is not None
        return self.listener.getsockname()[1:].decode()

    def _timeout(self) -> float | None:
        times = [s.kill_at for s in self.steps.values() if s.kill_at]
        if self.listener is not None and not self.conns and not self.steps:
            # the idle end, and a look at the home at least once a minute
            times.append(min(self.idle_since + self.idle, time.monotonic() + 60.0))
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            assert self.listener is not None
            conn, _ = self.listener.accept()
            if _peer(conn)[1] != os.getuid():
                conn.close()  # only this user's runners may ask it to run anything
                return
            conn.send(b"ready")
            self.conns.append(conn)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            step = self.steps.pop(pid, None)
            if step is not None:
                with contextlib.suppress(OSError):
                    step.reply.send(f"exit {_exit_code(status)}".encode())
                step.reply.close()
        if not self.steps and not self.conns:
            self.idle_since = time.monotonic()

    def _gone(self, conn: socket.socket) -> None:
        """A runner closed its connection: its steps still running end as its cold ones would
        (SIGTERM to the group, SIGKILL after the grace)."""
        self.conns.remove(conn)
        conn.close()
        now = time.monotonic()
        for pid, step in self.steps.items():
            if step.conn is conn and not step.kill_at:
                _killpg(pid, signal.SIGTERM)
                step.kill_at = now + step.grace
        if not self.conns and not self.steps:
            self.idle_since = now

    def _request(self, conn: socket.socket) -> _Request | None:
        try:
            data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 4)
        except OSError:
            data, fds = b"", []
        if not data or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            self._gone(conn)
            return None
        reply = socket.socket(fileno=fds[0])
        log_fd = fds[1]
        msg = json.loads(data)
        detached = bool(msg.get("detached"))
        if detached and step_module(msg["argv"], sys.executable, DETACHED_MODULES) is None:
            os.close(log_fd)
            reply.close()  # the asker sees no pid and starts it cold
            return None
        pid = os.fork()
        if pid == 0:  # the step: drop everything of the helper's
            signal.set_wakeup_fd(-1)
            for fd in (self.wake_r, self.wake_w):
                os.close(fd)
            others = [*self.conns, reply, *(s.reply for s in self.steps.values())]
            if self.listener is not None:
                others.append(self.listener)
            for other in others:
                other.close()
            return _Request(msg["argv"], msg["env"], msg["cwd"], log_fd, detached)
        os.close(log_fd)
        if detached:  # not a step: nobody waits for its exit here (the helper reaps it)
            with contextlib.suppress(OSError):
                reply.send(f"pid {pid}".encode())
            reply.close()
            return None
        self.steps[pid] = _Step(reply, conn, float(msg.get("grace", 10.0)))
        with contextlib.suppress(OSError):
            reply.send(f"pid {pid}".encode())
        return None


def _killpg(pid: int, sig: int) -> None:
    """Only for a step not yet reaped: its pid (= its group) is still its own."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _become_step(req: _Request, helper: int) -> Any:
    """In the forked child: set up exactly what SubprocessExecutor.start gives a process
    (session, parent-death signal, stdio on the log, cwd, env, argv), then run the module as
    ``python -m`` does."""
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()
    if not req.detached:
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
    # The helper's finalizers (weakref.finalize, run at exit) clean up the helper's objects:
    # a temporary folder of the helper's would be removed by its first step's exit. The step
    # runs its own; the helper's are the helper's. (The registry is weakref's own, private.)
    with contextlib.suppress(Exception):
        import weakref

        for fin in list(weakref.finalize._registry):  # type: ignore[attr-defined]
            fin.atexit = False
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
    import argparse

    p = argparse.ArgumentParser(prog="python -m taskyard.run.warm")
    p.add_argument("--fd", type=int, help="per run: the control socket from the runner")
    p.add_argument("--listen", help="kept: the abstract socket name to listen on")
    p.add_argument("--idle", type=float, default=DEFAULT_IDLE_S)
    p.add_argument("--home", type=Path, help="kept: the home's warm/ folder")
    args = p.parse_args()
    helper = os.getpid()
    if args.fd is not None:
        ctl = socket.socket(fileno=args.fd)
        _die_with_parent(os.getppid())  # armed by the runner's preexec too; checked here again
        status = _loaded()
        if status != b"ready":
            with contextlib.suppress(OSError):
                ctl.send(status)
            return
        req = _Helper([ctl]).run()
    else:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            listener.bind(_address(args.listen))
        except OSError:
            return  # another helper has the name (a runner raced us to start one)
        listener.listen(64)  # runners queue here while it loads
        status = _loaded()
        if status != b"ready":  # tell the runners waiting now, then end
            listener.setblocking(False)
            with contextlib.suppress(OSError):
                while True:
                    listener.accept()[0].send(status)
            return
        req = _Helper([], listener, args.idle, args.home).run()
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
