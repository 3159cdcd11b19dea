"""The run store: one folder per run under the taskyard home, with a ``run.json`` record.

Layout of ``<runs_dir>/<run-id>/``::

    run.json                  the record (pipeline, params, status, per-task states, results)
    workspaces/<name>/        pipeline workspaces the user did not bind with --workspace
    results/<task>/<result>   one small text file per task result
    logs/<task>.log           stdout + stderr of the task, with a header per retry

``run.json`` is rewritten atomically (temp file + rename) each time a state changes, so a
reader (``taskyard runs``, a second terminal, the lead's demo) never sees half a record.

What is stored is redacted (:mod:`taskyard.redact`): params, results and reasons lose any
``user:password@`` of a URL. The runner keeps the real values in memory for binding.

A run whose runner died (SIGKILL, OOM, a reboot) cannot finish its own record. Whoever reads
it next (``taskyard runs``, ``RunStore.list/get``) sees that the runner's pid is gone, or now
belongs to another process (its start time, /proc/<pid>/stat field 22, differs from the one
recorded), and rewrites the record once as ``Abandoned``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from taskyard import home
from taskyard._os import pid_alive
from taskyard.errors import RunError
from taskyard.redact import redact, redact_values
from taskyard.spec.task import CACHE_RESULT

# Task states (Tekton's reasons, trimmed to what a local run can reach).
PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SKIPPED = "Skipped"
CANCELLED = "Cancelled"
# A run (never a task) whose runner process died before it could finish the record.
ABANDONED = "Abandoned"
TERMINAL = frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELLED, ABANDONED})
CACHED = "Cached"  # shown for a Succeeded task that replayed a cache entry (not a state)
ABANDONED_REASON = "the runner process died (killed?)"

RECORD = "run.json"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot, /proc/<pid>/stat field 22), or None.

    With the pid, it names one process for good: a pid reused after a reboot or a wrap-around
    has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may hold spaces or ')': split after the last ')'.
    rest = stat.rpartition(")")[2].split()
    try:
        return int(rest[22 - 3])  # rest[0] is field 3
    except (IndexError, ValueError):
        return None


def _hostname() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return ""


@dataclass
class TaskRecord:
    """What happened to one pipeline task."""

    name: str
    task: str
    finally_: bool = False
    state: str = PENDING
    attempts: int = 0
    retries: int = 0
    started: float | None = None
    ended: float | None = None
    results: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    # Why a skipped task was skipped: "when" (its own gate) or "parent"/"results" (inherited).
    skip_kind: str = ""
    log: str = ""

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started

    @property
    def cached_from(self) -> str:
        """The cache entry a succeeded task replayed (its ``cached-from`` result), or "".

        A matrixed task's results are its trials' lists: each trial says whether it was
        cached (its own record), the task itself never is.
        """
        value = self.results.get(CACHE_RESULT, "") if self.state == SUCCEEDED else ""
        return "" if value.startswith("[") else value

    @property
    def shown_state(self) -> str:
        """``Cached`` for a task that replayed stored results, else its state."""
        return CACHED if self.cached_from else self.state

    def to_json(self) -> dict[str, Any]:
        """The stored form: results and reason redacted."""
        data = dict(vars(self))
        data["finally"] = data.pop("finally_")
        data["duration"] = self.duration
        data["results"] = redact_values(self.results)
        data["reason"] = redact(self.reason)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskRecord:
        data = dict(data)
        data["finally_"] = data.pop("finally", False)
        return cls(**_known(cls, data))


@dataclass
class RunRecord:
    """A pipeline run, as stored in ``run.json``."""

    id: str
    pipeline: str
    dir: str
    params: dict[str, str] = field(default_factory=dict)
    workspaces: dict[str, str | None] = field(default_factory=dict)
    status: str = PENDING
    reason: str = ""
    started: float = field(default_factory=time.time)
    ended: float | None = None
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)
    # What started the run (``taskyard serve``: source, delivery, the alert); empty by hand.
    trigger: dict[str, str] = field(default_factory=dict)
    executor: str = "subprocess"
    # The runner process: pid, its start time and host, to tell a dead runner from a live one.
    pid: int = field(default_factory=os.getpid)
    pid_start: int | None = field(default_factory=lambda: process_start(os.getpid()))
    host: str = field(default_factory=_hostname)
    # Each task's stored JSON with what it was made from (see :meth:`save`); not a field.
    _encoded: dict[str, tuple[tuple, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _running: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def duration(self) -> float:
        return (self.ended or time.time()) - self.started

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    def runner_alive(self) -> bool:
        """Whether the process that runs this run still exists (the same process, not its pid).

        A record from another host cannot be judged here (a shared home): it counts as alive.
        """
        if self.host and self.host != _hostname():
            return True
        if not pid_alive(self.pid):
            return False
        if self.pid_start is not None:
            now = process_start(self.pid)
            if now is not None and now != self.pid_start:
                return False  # the pid was reused by another process
        return True

    @property
    def abandoned(self) -> bool:
        """Pending/Running, but its runner is gone: nobody will ever finish this record."""
        return self.status in (PENDING, RUNNING) and not self.runner_alive()

    def display_status(self) -> str:
        """The stored status, or ``Abandoned`` for a run whose process died mid-run."""
        return ABANDONED if self.abandoned else self.status

    def abandon(self, now: float | None = None) -> None:
        """Mark the run as ended by its runner's death; unfinished tasks become Cancelled."""
        now = time.time() if now is None else now
        self.status = ABANDONED
        self.reason = ABANDONED_REASON
        self.ended = now
        for t in self.tasks.values():
            if t.state in (PENDING, RUNNING):
                t.state = CANCELLED
                t.reason = "runner died"
                if t.started is not None:
                    t.ended = now

    def _head(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k not in ("tasks", "_encoded", "_running")}
        data["duration"] = self.duration
        data["params"] = redact_values(self.params)
        data["results"] = redact_values(self.results)
        data["reason"] = redact(self.reason)
        return data

    def _tasks_json(self, changed: set[str] | None = None) -> str:
        """The tasks as stored, re-encoding only those that changed since the last save.

        The record is saved once per scheduling round; encoding every task each time made a
        500-task run quadratic (benchmarks/runner_overhead.py). A running task is always
        re-encoded: its duration moves. ``changed``: the tasks the caller changed since its
        last save (the runner knows): only those and the running ones are looked at. None:
        every task is compared with what it was encoded from.
        """
        encoded = self._encoded
        if changed is None or len(encoded) != len(self.tasks):
            names: Iterable[str] = list(self.tasks)
        else:
            names = changed | self._running
        for name in names:
            t = self.tasks[name]
            made_of = (t.state, t.attempts, t.started, t.ended, t.reason, t.skip_kind,
                       tuple(t.results.items()))  # fmt: skip
            known = encoded.get(name)
            if known is None or known[0] != made_of or t.state == RUNNING:
                text = json.dumps(t.to_json(), default=str)
                encoded[name] = (made_of, f"{json.dumps(name)}:{text}")
            if t.state == RUNNING:
                self._running.add(name)
            else:
                self._running.discard(name)
        return "{" + ",".join([encoded[n][1] for n in self.tasks]) + "}"

    def to_json(self) -> dict[str, Any]:
        """The stored form: params, results and reasons redacted."""
        data = {k: v for k, v in vars(self).items() if k not in ("tasks", "_encoded", "_running")}
        data["duration"] = self.duration
        data["params"] = redact_values(self.params)
        data["results"] = redact_values(self.results)
        data["reason"] = redact(self.reason)
        data["tasks"] = {name: task.to_json() for name, task in self.tasks.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        data = _known(cls, data)
        # Records written before these fields existed: unknown, not this process's values.
        data.setdefault("pid_start", None)
        data.setdefault("host", "")
        tasks = {}
        for name, t in data.pop("tasks", {}).items():
            tasks[name] = TaskRecord.from_json(t)
        return cls(tasks=tasks, **data)

    def save(self, changed: set[str] | None = None) -> None:
        """Atomic rewrite of ``run.json`` (cheap: no fsync; a crash keeps the last record).

        No ``indent``: json's C encoder only runs without it, and this runs per state change.
        ``changed``: see :meth:`_tasks_json`.
        """
        target = os.path.join(self.dir, RECORD)
        # A name per writer: a reader marking the run Abandoned may race another reader.
        tmp = os.path.join(self.dir, f".{RECORD}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
        try:
            with open(tmp, "w") as f:
                head = json.dumps(self._head(), default=str)
                f.write(head[:-1] + ', "tasks": ' + self._tasks_json(changed) + "}")
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Only the fields ``cls`` has: derived keys (duration) and newer ones are dropped."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def new_run_id(pipeline: str, now: float | None = None) -> str:
    """``<pipeline>-<YYYYmmdd-HHMMSS>-<4 hex>``: sortable by time, unique per second."""
    stamp = datetime.fromtimestamp(now or time.time()).strftime("%Y%m%d-%H%M%S")
    return f"{pipeline}-{stamp}-{secrets.token_hex(2)}"


class RunStore:
    """Run folders under ``root`` (default: the taskyard home's ``runs/``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else home.runs_dir()

    def create(self, pipeline: str, run_id: str | None = None) -> RunRecord:
        """Make a fresh run folder (with its sub-folders) and its first record.

        ``run_id`` is given by a supervisor (``taskyard serve``) that must know the run's folder
        before the run starts; it must be new.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        if run_id is not None:
            if not RUN_ID.fullmatch(run_id):
                raise RunError(f"run id {run_id!r} is not valid", "letters, digits, '.', '_', '-'")
            path = self.root / run_id
            try:
                path.mkdir()
            except FileExistsError:
                raise RunError(f"run {run_id!r} already exists in {self.root}") from None
        while run_id is None:
            candidate = new_run_id(pipeline)
            path = self.root / candidate
            try:
                path.mkdir()
                run_id = candidate
            except FileExistsError:
                continue
        for sub in ("workspaces", "results", "logs"):
            (path / sub).mkdir()
        return RunRecord(id=run_id, pipeline=pipeline, dir=str(path))

    def list(self) -> list[RunRecord]:
        """Every readable run, newest first."""
        if not self.root.is_dir():
            return []
        runs = []
        for entry in self.root.iterdir():
            try:
                runs.append(_settle(entry / RECORD, _read(entry / RECORD)))
            except (OSError, ValueError, TypeError):
                continue  # a folder being created, or not a run
        runs.sort(key=lambda r: (r.started, r.id), reverse=True)
        return runs

    def get(self, run_id: str) -> RunRecord:
        """A run by id, or by a unique prefix of its id (``latest`` is the newest run)."""
        if run_id == "latest":
            runs = self.list()
            if not runs:
                raise RunError(f"no runs yet in {self.root}")
            return runs[0]
        exact = self.root / run_id / RECORD
        if exact.is_file():
            return _settle(exact, _read(exact))
        matches = [r for r in self.list() if r.id.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunError(f"no run {run_id!r} in {self.root}", "see `taskyard runs`")
        ids = ", ".join(r.id for r in matches[:5])
        raise RunError(f"run id {run_id!r} is ambiguous", f"matches {ids}")

    def log(self, run: RunRecord, task: str) -> Path:
        if task not in run.tasks:
            known = ", ".join(run.tasks)
            raise RunError(f"run {run.id!r} has no task {task!r}", f"known: {known}")
        path = Path(run.tasks[task].log or run.path / "logs" / f"{task}.log")
        if not path.is_file():
            raise RunError(f"task {task!r} of run {run.id!r} has no log (it never started)")
        return path


def _read(path: Path) -> RunRecord:
    return RunRecord.from_json(json.loads(path.read_text()))


def _settle(path: Path, rec: RunRecord) -> RunRecord:
    """``rec``, rewritten once as Abandoned when its runner died before finishing it."""
    if not rec.abandoned:
        return rec
    # The runner may have written its last record between our read and its exit: re-read.
    # It is gone now, so what is on disk is final.
    with contextlib.suppress(OSError, ValueError, TypeError):
        rec = _read(path)
    if rec.status not in (PENDING, RUNNING):
        return rec
    rec.abandon()
    with contextlib.suppress(OSError):  # a run folder we may not write: shown, not rewritten
        rec.save()
    return rec
