"""Local model servers: records, start, stop, list.

Each server is ``python -m taskyard.serving`` (MLflow's scoring app) in its own session, so it
outlives the step that started it and is stopped as a whole process group. Its record lives in
the model's folder under ``deployments_dir()``:

- ``starting-<pid>.json``: written right after the process starts and **before** it is waited
  on, so a server whose deploy is killed mid-way is still listed by ``taskyard deployments``
  and can be stopped;
- ``deployment.json``: the server that passed its smoke test and serves the model now (the
  starting record is renamed onto it, atomically).

A record whose pid is gone, or reused by another command line, is stale and gets cleaned. No CLI
or rich code here: the deploy step and ``taskyard deployments`` both build on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taskyard._os import pid_alive
from taskyard.home import deployments_dir
from taskyard.locks import model_folder

RECORD = "deployment.json"
LOG = "server.log"
SERVING, STARTING = "serving", "starting"


@dataclass
class Deployment:
    """What we need to find, probe and stop a server later, from any process."""

    name: str
    model: str
    version: str
    alias: str
    model_uri: str
    host: str
    port: int
    url: str
    pid: int
    pgid: int
    cmdline: list[str]
    log: str
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    state: str = SERVING
    # The kernel's start time of pid (clock ticks since boot, /proc/PID/stat field 22): with
    # the command line, what tells this server from a later process that got its pid. 0: not
    # recorded (older records, no procfs).
    start_ticks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def path(self) -> Path:
        name = RECORD if self.state == SERVING else f"{STARTING}-{self.pid}.json"
        return model_folder(self.name) / name


# --- records ------------------------------------------------------------------------------


def _read(path: Path) -> Deployment | None:
    try:
        return Deployment(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):  # a corrupt record is as good as a stale one
        path.unlink(missing_ok=True)
        return None


def load(name: str) -> Deployment | None:
    """The serving record of model ``name`` (alive or not)."""
    return _read(model_folder(name) / RECORD)


def records(name: str) -> list[Deployment]:
    """Every record of model ``name``: the serving one first, then starting ones."""
    return records_in(model_folder(name))


def records_in(folder: Path) -> list[Deployment]:
    paths = [folder / RECORD, *sorted(folder.glob(f"{STARTING}-*.json"))]
    return [d for d in map(_read, paths) if d is not None]


def save(dep: Deployment) -> Path:
    path = dep.path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dep.to_dict(), indent=2) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a record
    return path


def commit(dep: Deployment) -> None:
    """A starting server passed its smoke test: it becomes the model's serving record."""
    starting = dep.path
    dep.state = SERVING
    save(dep)
    starting.unlink(missing_ok=True)


def forget(dep: Deployment) -> None:
    """Drop the record, unless another deploy already replaced it with its own."""
    current = _read(dep.path)
    if current is not None and current.pid == dep.pid:
        dep.path.unlink(missing_ok=True)


# --- processes ------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on (proc(5)), or None when the pid does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, pgid) from /proc, or None when the pid does not exist."""
    fields = _stat_fields(pid)
    return None if fields is None else (fields[0], int(fields[2]))


def start_ticks(pid: int) -> int:
    """When the process started (field 22, starttime); 0 when unknown."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else 0


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _reap(pid: int) -> None:
    """Collect our own child's exit status, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    if not Path("/proc").is_dir():  # no procfs: signal 0 is the best we have
        return pid_alive(pid)
    _reap(pid)
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def alive(dep: Deployment) -> bool:
    """The recorded server still runs: its pid exists and still runs the recorded command."""
    if not running(dep.pid):
        return False
    if dep.start_ticks and start_ticks(dep.pid) not in (0, dep.start_ticks):
        return False  # another process got the pid
    cmd = _cmdline(dep.pid)
    return cmd is None or cmd == dep.cmdline  # None: no procfs to compare against


def _group(pgid: int) -> list[int]:
    """Live (non-zombie) members of a process group; zombies nobody reaps must not count."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st and st[1] == pgid and st[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def _ours(pid: int) -> bool:
    """Only signal groups running a model server (pids and group ids get reused)."""
    cmd = _cmdline(pid)
    if cmd is None:
        return not Path("/proc").is_dir()  # no procfs: trust the recorded group
    return any(a == SERVER_MODULE or "mlflow" in a or "uvicorn" in a for a in cmd)


def stop_process_group(pgid: int, pid: int, grace: float = 10.0, known: bool = False) -> bool:
    """SIGTERM the group, wait, then SIGKILL. Returns True when something was signalled.
    ``known``: the caller has checked the leader is the recorded server (:func:`alive`)."""
    if not known and not any(_ours(p) for p in _group(pgid)):
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not _group(pgid):
                return True
            time.sleep(0.1)
    _reap(pid)
    return True


def stop_deployment(dep: Deployment, grace: float = 10.0) -> bool:
    """Stop one recorded server (if it is still ours) and drop its record."""
    stopped = False
    known = alive(dep)
    if known or any(_ours(p) for p in _group(dep.pgid)):
        stopped = stop_process_group(dep.pgid, dep.pid, grace, known=known)
    forget(dep)
    return stopped


def stop(name: str, grace: float = 10.0) -> list[Deployment]:
    """Stop every server recorded for model ``name`` (serving and starting); the live ones."""
    stopped = []
    for dep in records(name):
        was_alive = alive(dep)
        stop_deployment(dep, grace)
        if was_alive:
            stopped.append(dep)
    return stopped


def list_deployments() -> list[Deployment]:
    """Live servers of every model, serving and starting; stale records are removed."""
    root = deployments_dir()
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir():
            continue
        for dep in records_in(folder):
            if alive(dep):
                found.append(dep)
            else:
                dep.path.unlink(missing_ok=True)
    return found


# --- starting -------------------------------------------------------------------------------


def connect_host(host: str) -> str:
    """A wildcard bind address is not something a client can connect to."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def base_url(host: str, port: int) -> str:
    h = connect_host(host)
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As uvicorn does: connections in TIME_WAIT from a server just stopped do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """Ask the kernel for a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


SERVER_MODULE = "taskyard.serving"


def serve_command(model_uri: str, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", SERVER_MODULE,
        "--model-uri", model_uri, "--host", host, "--port", str(port),
    ]  # fmt: skip


def start(
    *,
    name: str,
    model: str,
    version: str,
    alias: str,
    model_uri: str,
    host: str,
    port: int,
    tracking_uri: str,
) -> tuple[Deployment, subprocess.Popen[bytes] | None]:
    """Start a detached server (own session = own process group) and record it as starting."""
    d = model_folder(name)
    d.mkdir(parents=True, exist_ok=True)
    log = d / LOG
    if log.exists():  # a server still running keeps writing to its (renamed) file
        log.replace(d / f"{LOG}.prev")
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    cmd = serve_command(model_uri, host, port)
    proc: subprocess.Popen[bytes] | None = None
    with open(log, "ab") as out:
        pid = _warm_start(cmd, env, d, out.fileno())
        if pid is None:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=d,
                start_new_session=True,
            )
            pid = proc.pid
    # A server forked by the warm interpreter shows that interpreter's command line.
    shown = (_cmdline(pid) or cmd) if proc is None else cmd
    dep = Deployment(
        name=name,
        model=model,
        version=version,
        alias=alias,
        model_uri=model_uri,
        host=host,
        port=port,
        url=base_url(host, port),
        pid=pid,
        pgid=pid,  # its own session: the leader's pid is the group id
        cmdline=shown,
        log=str(log),
        state=STARTING,
        start_ticks=start_ticks(pid),
    )
    save(dep)
    return dep, proc


def _warm_start(cmd: list[str], env: dict[str, str], cwd: Path, log_fd: int) -> int | None:
    """Under ``taskyard run`` with a kept warm interpreter, fork the server from it: the same
    argv, env, cwd, log and own session, without seconds of imports (run/warm.py); None: the
    caller starts it as a new process."""
    from taskyard.run.warm import spawn_detached  # it says None outside such a run

    try:
        return spawn_detached(cmd, env, cwd, log_fd)
    except OSError:
        return None
