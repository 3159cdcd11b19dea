"""Local model servers: start, wait for health, smoke-test, stop, list.

Each server is ``mlflow models serve --env-manager local`` in its own session, so it outlives the
step that started it and is stopped as a whole process group. Its record lives in
``deployments_dir()/<name>/deployment.json``; a record whose pid is gone, or reused by another
command line, is stale and gets cleaned. No CLI or rich code here: the deploy step and the
``taskyard deployments`` command both build on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taskyard._os import pid_alive
from taskyard.errors import StepError
from taskyard.home import deployments_dir

RECORD = "deployment.json"
LOG = "server.log"
SMOKE_PREVIEW_BYTES = 300


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- where records live -------------------------------------------------------------------


def slug(name: str) -> str:
    """A registered model name as a folder name (names may hold '/', spaces...)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    if not s:
        raise StepError(f"cannot use {name!r} as a deployment name")
    return s


def folder(name: str) -> Path:
    return deployments_dir() / slug(name)


def load(name: str) -> Deployment | None:
    path = folder(name) / RECORD
    try:
        return Deployment(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):  # a corrupt record is as good as a stale one
        path.unlink(missing_ok=True)
        return None


def save(dep: Deployment) -> Path:
    path = folder(dep.name) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dep.to_dict(), indent=2) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a record
    return path


def forget(dep: Deployment) -> None:
    """Drop the record, unless another deploy already replaced it with its own."""
    current = load(dep.name)
    if current is not None and current.pid == dep.pid:
        (folder(dep.name) / RECORD).unlink(missing_ok=True)


@contextlib.contextmanager
def lock(name: str) -> Iterator[None]:
    """Serialise deploys of one model, so two never race for its record or port."""
    d = folder(name)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- processes ------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, pgid) from /proc, or None when the pid does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[2])


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


def _running(pid: int) -> bool:
    if not Path("/proc").is_dir():  # no procfs: signal 0 is the best we have
        return pid_alive(pid)
    _reap(pid)
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def alive(dep: Deployment) -> bool:
    """The recorded server still runs: its pid exists and still runs the recorded command."""
    if not _running(dep.pid):
        return False
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
    return any("mlflow" in a or "uvicorn" in a for a in cmd)


def stop_process_group(pgid: int, pid: int, grace: float = 10.0) -> bool:
    """SIGTERM the group, wait, then SIGKILL. Returns True when something was signalled."""
    if not any(_ours(p) for p in _group(pgid)):
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
    if alive(dep) or any(_ours(p) for p in _group(dep.pgid)):
        stopped = stop_process_group(dep.pgid, dep.pid, grace)
    forget(dep)
    return stopped


def stop(name: str, grace: float = 10.0) -> Deployment | None:
    """Stop the deployment recorded under ``name``; None when there was none (or it was stale)."""
    dep = load(name)
    if dep is None:
        return None
    was_alive = alive(dep)
    stop_deployment(dep, grace)
    return dep if was_alive else None


def list_deployments() -> list[Deployment]:
    """Live deployments; stale records are removed on the way."""
    root = deployments_dir()
    found = []
    for path in sorted(root.glob(f"*/{RECORD}")) if root.is_dir() else []:
        try:
            dep = Deployment(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if alive(dep):
            found.append(dep)
        else:
            path.unlink(missing_ok=True)
    return found


# --- starting and probing -------------------------------------------------------------------


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
    """Ask the kernel for a free port (mlflow treats -p 0 as 'use the default 5000')."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve_command(model_uri: str, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "models", "serve",
        "-m", model_uri, "--env-manager", "local", "-h", host, "-p", str(port), "-w", "1",
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
) -> tuple[Deployment, subprocess.Popen[bytes]]:
    """Start a detached server (own session = own process group); it is not recorded yet."""
    d = folder(name)
    d.mkdir(parents=True, exist_ok=True)
    log = d / LOG
    if log.exists():  # a server still running keeps writing to its (renamed) file
        log.replace(d / f"{LOG}.prev")
    env = dict(os.environ)
    # env-manager local runs `uvicorn` from PATH: the venv's bin must come first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    cmd = serve_command(model_uri, host, port)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=d,
            start_new_session=True,
        )
    dep = Deployment(
        name=name,
        model=model,
        version=version,
        alias=alias,
        model_uri=model_uri,
        host=host,
        port=port,
        url=base_url(host, port),
        pid=proc.pid,
        pgid=proc.pid,  # start_new_session: the leader's pid is the group id
        cmdline=cmd,
        log=str(log),
    )
    return dep, proc


def last_log_line(dep: Deployment) -> str:
    try:
        lines = [ln.strip() for ln in Path(dep.log).read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:300] if lines else ""


def wait_healthy(dep: Deployment, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Poll /ping until 200; fail fast when the server process dies."""
    deadline = time.monotonic() + timeout
    while True:
        exited = proc.poll() if proc is not None else (None if _running(dep.pid) else -1)
        if exited is not None:
            tail = last_log_line(dep)
            raise StepError(
                f"the model server exited (code {exited}) before becoming healthy"
                + (f": {tail}" if tail else "")
            )
        for path in ("/ping", "/health"):
            try:
                with urllib.request.urlopen(dep.url + path, timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
        if time.monotonic() > deadline:
            tail = last_log_line(dep)
            raise StepError(
                f"the model server at {dep.url} was not healthy after {timeout:.0f}s"
                + (f" (last log line: {tail})" if tail else "")
            )
        time.sleep(0.5)


# --- smoke test ------------------------------------------------------------------------------


def _sample(type_name: str) -> Any:
    t = type_name.lower()
    if t in ("boolean", "bool"):
        return False
    if t.startswith(("int", "long", "uint")):
        return 0
    if t.startswith(("float", "double")):
        return 0.0
    if t in ("datetime",):
        return "2024-01-01T00:00:00"
    return "a"


def _tensor(dtype: str, shape: tuple[int, ...]) -> Any:
    value = _sample(dtype)
    dims = [1 if d is None or d < 0 else d for d in shape] or [1]
    for d in reversed(dims):
        value = [value] * d
    return value


def payload_from_schema(schema: Any) -> dict[str, Any]:
    """One synthetic row from the signature's input schema, in the serving JSON format."""
    from mlflow.types.schema import ColSpec, TensorSpec

    inputs = schema.inputs
    if inputs and all(isinstance(i, TensorSpec) for i in inputs):
        if len(inputs) == 1 and not inputs[0].name:
            return {"inputs": _tensor(str(inputs[0].type), inputs[0].shape)}
        return {"inputs": {i.name: _tensor(str(i.type), i.shape) for i in inputs}}
    row = []
    for col in inputs:
        t = col.type
        row.append(_sample(t.name if isinstance(col, ColSpec) and hasattr(t, "name") else str(t)))
    names = [c.name for c in inputs]
    if all(names):
        return {"dataframe_split": {"columns": names, "data": [row]}}
    return {"inputs": [row]}


def smoke_payload(model_uri: str) -> dict[str, Any]:
    """The logged serving example if the model has one, else a row built from its signature."""
    from mlflow.models import Model
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        meta = Model.load(model_uri)
    except Exception as e:
        raise StepError(f"cannot read the MLmodel of {model_uri}: {str(e).splitlines()[0]}") from e
    example = (meta.saved_input_example_info or {}).get("serving_input_path")
    if example:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = get_artifact_repository(model_uri).download_artifacts(example, tmp)
                return json.loads(Path(path).read_text())
            except Exception:
                pass  # fall back to the signature
    if meta.signature is None or meta.signature.inputs is None:
        raise StepError(
            f"{model_uri} has neither an input example nor a signature; cannot build a smoke "
            "request (log the model with a signature)"
        )
    return payload_from_schema(meta.signature.inputs)


def _rows(payload: dict[str, Any]) -> int | None:
    if "dataframe_split" in payload:
        return len(payload["dataframe_split"].get("data", []))
    for key in ("dataframe_records", "instances", "inputs"):
        value = payload.get(key)
        if isinstance(value, list):
            return len(value)
    return None


def _http_error(e: urllib.error.HTTPError) -> str:
    """The scoring server's message, plus the exception it caught (last traceback line)."""
    text = e.read().decode(errors="replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text.splitlines()[0][:200] if text else e.reason
    message = str(body.get("message", "")).strip().splitlines()
    trace = [ln.strip() for ln in str(body.get("stack_trace", "")).splitlines() if ln.strip()]
    head = message[0][:200] if message else str(e.reason)
    return f"{head} (cause: {trace[-1][:200]})" if trace else head


def smoke(dep: Deployment, payload: dict[str, Any], timeout: float = 60.0) -> str:
    """POST the payload to /invocations; return the answer's text when it predicts every row."""
    req = urllib.request.Request(
        dep.url + "/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        raise StepError(f"smoke request got HTTP {e.code}: {_http_error(e)}") from e
    except OSError as e:
        raise StepError(f"smoke request to {dep.url}/invocations failed: {e}") from e
    try:
        answer = json.loads(body)
    except ValueError as e:
        raise StepError(f"smoke answer is not JSON: {body[:100]!r}") from e
    preds = answer.get("predictions") if isinstance(answer, dict) else None
    if preds is None:
        raise StepError(f"smoke answer has no predictions: {body[:100]!r}")
    want = _rows(payload)
    got = len(preds) if isinstance(preds, list) else None
    if isinstance(preds, dict):  # one list per named output
        lens = {len(v) for v in preds.values() if isinstance(v, list)}
        got = lens.pop() if len(lens) == 1 else None
    if want is not None and got != want:
        raise StepError(f"smoke answer has {got} predictions for {want} rows")
    if want is None and not preds:
        raise StepError("smoke answer has no predictions")
    return body[:SMOKE_PREVIEW_BYTES]
