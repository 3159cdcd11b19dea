"""Submitters turn a stored request into a run. The listener knows nothing of runner internals.

The default, :class:`CliSubmitter`, runs ``<python> -m taskyard.cli run PIPELINE -p k=v …`` as
a subprocess (its own process group, output in ``<state>/logs/<seq>.log``) and then finds the
run folder it made under ``$TASKYARD_HOME/runs`` by pipeline + params. :class:`NoopSubmitter`
starts nothing (the load benchmark uses it to measure the listener alone).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from taskyard import home
from taskyard.serve.store import Stored


@dataclass(frozen=True)
class SubmitResult:
    ok: bool
    run_id: str | None = None
    exit_code: int | None = None
    detail: str = ""
    interrupted: bool = False  # stopped by a listener shutdown: re-run after restart


class Submitter(Protocol):
    def submit(self, item: Stored) -> SubmitResult:
        """Run the request to completion (called on a worker thread)."""
        ...

    def cancel_all(self) -> None:
        """Stop every run in flight (graceful shutdown ran out of time)."""
        ...


class NoopSubmitter:
    """Records nothing, runs nothing: each request 'succeeds' at once."""

    def submit(self, item: Stored) -> SubmitResult:
        return SubmitResult(ok=True, detail="noop submitter")

    def cancel_all(self) -> None:
        pass


def command(item: Stored) -> list[str]:
    """The argv of the run: params as separate ``-p k=v`` args, never through a shell."""
    argv = [sys.executable, "-m", "taskyard.cli", "run", item.request.pipeline]
    for key, value in sorted(item.request.params.items()):
        argv += ["-p", f"{key}={value}"]
    return argv


def find_run(pipeline: str, params: dict[str, str], since: float) -> str | None:
    """The newest run folder of ``pipeline`` with these params, started at/after ``since``."""
    best: tuple[float, str] | None = None
    root = home.runs_dir()
    for record in root.glob("*/run.json") if root.is_dir() else ():
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        got = data.get("params") or {}
        if data.get("pipeline") != pipeline or float(data.get("started") or 0) < since - 1:
            continue
        if all(got.get(k) == v for k, v in params.items()):
            cand = (float(data["started"]), str(data.get("id") or record.parent.name))
            best = max(best, cand) if best else cand
    return best[1] if best else None


class CliSubmitter:
    """``taskyard run`` in a subprocess; one per request, waited for on the worker thread."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: dict[int, subprocess.Popen] = {}
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()

    def submit(self, item: Stored) -> SubmitResult:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{item.seq}.log"
        started = time.time()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                command(item),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=os.environ.copy(),
            )
            with self._lock:
                self._procs[item.seq] = proc
            code = proc.wait()
        with self._lock:
            self._procs.pop(item.seq, None)
            cancelled = item.seq in self._cancelled
            self._cancelled.discard(item.seq)
        run_id = find_run(item.request.pipeline, item.request.params, started)
        if cancelled:
            return SubmitResult(False, run_id, code, "interrupted by shutdown", interrupted=True)
        tail = _last_line(log) if code else ""
        return SubmitResult(code == 0, run_id, code, tail)

    def cancel_all(self, wait: float = 5.0) -> None:
        """SIGTERM each run's process group; SIGKILL what is still there after ``wait``."""
        with self._lock:
            procs = dict(self._procs)
            self._cancelled.update(procs)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in procs.values():
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.poll() is None for p in procs.values()):
                time.sleep(0.05)


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
