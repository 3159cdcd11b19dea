"""Submitters turn a stored request into a run. The listener knows nothing of runner internals.

The default, :class:`CliSubmitter`, runs ``<python> -m taskyard.cli run PIPELINE --run-id ID
-p k=v …`` as a subprocess in its own session (output in ``<state>/logs/<seq>.log``). The run id
is chosen up front and stored with the row before the process starts, and the process id right
after, so the run folder (``$TASKYARD_HOME/runs/<ID>``) is known without guessing and a
restarted listener can tell what became of a run it had started:

* the process is still alive (its ``/proc/PID/cmdline`` has ``--run-id ID``) -> **adopt** it:
  wait for it (it is not our child: a pidfd, else a 0.5 s poll) and read ``run.json`` after;
* it is gone and ``run.json`` has a final status -> record that outcome, run nothing;
* it is gone and never wrote ``run.json``, or left it ``Running`` (a reboot, a SIGKILL of the
  run) -> run it again: delivery is at-least-once, never "twice at the same time".

:class:`NoopSubmitter` starts nothing (the load benchmark uses it to measure the listener alone).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from taskyard import home
from taskyard.redact import redact
from taskyard.run.store import CANCELLED, FAILED, SUCCEEDED, new_run_id
from taskyard.serve.store import Stored

log = logging.getLogger("taskyard.serve")
FINAL = (SUCCEEDED, FAILED, CANCELLED)  # a run's statuses that mean "it is over"
POLL = 0.5  # seconds between liveness checks where no pidfd is available


@dataclass(frozen=True)
class SubmitResult:
    ok: bool
    run_id: str | None = None
    exit_code: int | None = None
    detail: str = ""
    interrupted: bool = False  # stopped by a listener shutdown: re-run after restart


@dataclass(frozen=True)
class Recovery:
    """What a restarted listener does with a row left ``running``."""

    action: Literal["adopt", "record", "requeue"]
    pid: int | None = None  # adopt: the live process
    result: SubmitResult | None = None  # record: the outcome the run left behind
    reason: str = ""


class Submitter:
    """The interface (and the defaults) the dispatcher relies on."""

    def new_run_id(self, item: Stored) -> str | None:
        """The id the run will get, chosen before it starts (None: this submitter has none)."""
        return None

    def submit(self, item: Stored, spawned: Callable[[int], None]) -> SubmitResult:
        """Run the request to completion (called on a worker thread); call ``spawned(pid)``
        as soon as a process exists."""
        raise NotImplementedError

    def recover(self, item: Stored) -> Recovery:
        """After a restart: what became of this row's run."""
        return Recovery("requeue", reason="nothing to adopt")

    def adopt(self, item: Stored, pid: int) -> SubmitResult:
        """Wait for a run a previous listener started (``recover`` said ``adopt``)."""
        raise NotImplementedError

    def cancel_all(self) -> None:
        """Stop every run in flight (graceful shutdown ran out of time)."""


class NoopSubmitter(Submitter):
    """Records nothing, runs nothing: each request 'succeeds' at once."""

    def submit(self, item: Stored, spawned: Callable[[int], None]) -> SubmitResult:
        return SubmitResult(ok=True, detail="noop submitter")


def command(item: Stored, run_id: str) -> list[str]:
    """The argv of the run: params as separate ``-p k=v`` args, never through a shell."""
    argv = [sys.executable, "-m", "taskyard.cli", "run", item.request.pipeline]
    argv += ["--run-id", run_id]
    for key, value in trigger(item).items():
        argv += ["--trigger", f"{key}={value}"]
    for key, value in sorted(item.request.params.items()):
        argv += ["-p", f"{key}={value}"]
    return argv


def trigger(item: Stored) -> dict[str, str]:
    """What the run record keeps of what started it: the source, the delivery, and for an
    alert the alert's route, name and firing episode
    (``alert:<route>:<alertname>:<fingerprint>@<startsAt>``)."""
    r = item.request
    out = {"source": r.source, "delivery": r.delivery}
    if r.source == "alertmanager":
        out["alert"] = r.commit
    elif r.source != "cron":
        out["commit"] = r.commit
    return out


def run_status(run_id: str) -> str | None:
    """The status in ``runs/<id>/run.json``; None when the run never wrote one."""
    try:
        data = json.loads((home.runs_dir() / run_id / "run.json").read_text())
    except (OSError, ValueError):
        return None
    status = data.get("status") if isinstance(data, dict) else None
    return status if isinstance(status, str) else None


def runs_as(pid: int, run_id: str) -> bool:
    """Whether process ``pid`` is ``taskyard run --run-id <run_id>`` (not a reused pid)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    want = run_id.encode()
    return any(a == b"--run-id" and b == want for a, b in itertools.pairwise(args))


def find_process(run_id: str, hint: int | None = None) -> int | None:
    """The live process of run ``run_id``: the stored pid if it still is that run, else a scan
    of /proc (the listener may have died between starting it and storing its pid)."""
    if hint and runs_as(hint, run_id):
        return hint
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and runs_as(int(entry.name), run_id):
            return int(entry.name)
    return None


class _Process:
    """A run's process: our child (``Popen``) or an adopted one (a pid we did not start)."""

    def __init__(self, pid: int, popen: subprocess.Popen | None = None, run_id: str = "") -> None:
        self.pid, self.popen, self.run_id = pid, popen, run_id
        self.fd: int | None = None
        if popen is None:
            with contextlib.suppress(OSError, AttributeError):
                self.fd = os.pidfd_open(pid)
            # The pidfd pins this process; check it is still the run (pid reuse), now.
            self._gone = not runs_as(pid, run_id)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        if self._gone:
            return False
        if self.fd is not None:
            self._gone = bool(select.select([self.fd], [], [], 0)[0])
        else:
            self._gone = not runs_as(self.pid, self.run_id)
        return not self._gone

    def wait(self) -> int | None:
        """The exit code for a child; None for an adopted process (not ours to reap)."""
        if self.popen is not None:
            return self.popen.wait()
        while self.alive():
            if self.fd is not None:
                select.select([self.fd], [], [], 5.0)
            else:
                time.sleep(POLL)
        return None

    def signal(self, sig: int) -> None:
        """The whole process group when the run leads one (it does: its own session)."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class CliSubmitter(Submitter):
    """``taskyard run`` in a subprocess; one per request, waited for on the worker thread."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: dict[int, _Process] = {}
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()

    def new_run_id(self, item: Stored) -> str:
        root = home.runs_dir()
        # A pipeline given as path/to/file.py:ATTR names its run after ATTR.
        name = re.sub(r"[^a-z0-9._-]+", "-", re.split(r"[:/]", item.request.pipeline)[-1].lower())
        while True:  # new_run_id's 4 hex digits are per second; 8 make a clash unlikely
            run_id = f"{new_run_id(name.strip('-._') or 'run')}{secrets.token_hex(2)}"
            if not (root / run_id).exists():
                return run_id

    def submit(self, item: Stored, spawned: Callable[[int], None]) -> SubmitResult:
        run_id = item.run_id or self.new_run_id(item)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out_path = self.log_dir / f"{item.seq}.log"
        with out_path.open("ab") as out:
            proc = subprocess.Popen(
                command(item, run_id),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives a crashed listener; adopted on restart
                env=os.environ.copy(),
            )
        handle = _Process(proc.pid, proc)
        with self._lock:
            self._procs[item.seq] = handle
        try:
            spawned(proc.pid)
        except Exception:  # the store is down: the run goes on; a restart finds it in /proc
            log.exception("could not record the run's pid", extra={"fields": {"seq": item.seq}})
        return self._finish(item, run_id, handle)

    def recover(self, item: Stored) -> Recovery:
        run_id = item.run_id
        if not run_id:
            return Recovery("requeue", reason="no run id was recorded")
        pid = find_process(run_id, item.pid)
        if pid is not None:
            return Recovery("adopt", pid=pid)
        status = run_status(run_id)  # read after the liveness check: a run writes it, then exits
        if status in FINAL:
            detail = f"run {status} while the listener was down"
            result = SubmitResult(status == SUCCEEDED, run_id, None, detail)
            return Recovery("record", result=result)
        return Recovery(
            "requeue", reason=f"run {run_id} is gone ({status or 'never started'}): run again"
        )

    def adopt(self, item: Stored, pid: int) -> SubmitResult:
        assert item.run_id is not None
        proc = _Process(pid, run_id=item.run_id)
        with self._lock:
            self._procs[item.seq] = proc
        return self._finish(item, item.run_id, proc)

    def _finish(self, item: Stored, run_id: str, proc: _Process) -> SubmitResult:
        try:
            code = proc.wait()
        finally:
            proc.close()
            with self._lock:
                self._procs.pop(item.seq, None)
                cancelled = item.seq in self._cancelled
                self._cancelled.discard(item.seq)
        status = run_status(run_id)
        if cancelled:
            return SubmitResult(False, run_id, code, "interrupted by shutdown", interrupted=True)
        if code is None:  # adopted: the outcome is what the run recorded
            ok = status == SUCCEEDED
            code = 0 if ok else None
            if status not in FINAL:
                return SubmitResult(
                    False, run_id, None, f"run ended without a final status ({status})"
                )
        else:
            ok = code == 0
        detail = "" if ok else _last_line(self.log_dir / f"{item.seq}.log")
        return SubmitResult(ok, run_id, code, redact(detail))

    def cancel_all(self, wait: float = 5.0) -> None:
        """SIGTERM each run's process group; SIGKILL what is still there after ``wait``."""
        with self._lock:
            procs = dict(self._procs)
            self._cancelled.update(procs)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in procs.values():
                proc.signal(sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.alive() for p in procs.values()):
                time.sleep(0.05)


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
