"""The run store: one folder per run under the taskyard home, with a ``run.json`` record.

Layout of ``<runs_dir>/<run-id>/``::

    run.json                  the record (pipeline, params, status, per-task states, results)
    workspaces/<name>/        pipeline workspaces the user did not bind with --workspace
    results/<task>/<result>   one small text file per task result
    logs/<task>.log           stdout + stderr of the task, with a header per retry

``run.json`` is rewritten atomically (temp file + rename) each time a state changes, so a
reader (``taskyard runs``, a second terminal, the lead's demo) never sees half a record.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from taskyard import home
from taskyard._os import pid_alive
from taskyard.errors import RunError

# Task states (Tekton's reasons, trimmed to what a local run can reach).
PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SKIPPED = "Skipped"
CANCELLED = "Cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELLED})

RECORD = "run.json"


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

    def to_json(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["finally"] = data.pop("finally_")
        data["duration"] = self.duration
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
    executor: str = "subprocess"
    pid: int = field(default_factory=os.getpid)

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def duration(self) -> float:
        return (self.ended or time.time()) - self.started

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    def display_status(self) -> str:
        """The stored status, or ``Abandoned`` for a run whose process died mid-run."""
        if self.status in (PENDING, RUNNING) and not pid_alive(self.pid):
            return "Abandoned"
        return self.status

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k != "tasks"}
        data["duration"] = self.duration
        data["tasks"] = {name: task.to_json() for name, task in self.tasks.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        data = _known(cls, data)
        tasks = {}
        for name, t in data.pop("tasks", {}).items():
            tasks[name] = TaskRecord.from_json(t)
        return cls(tasks=tasks, **data)

    def save(self) -> None:
        """Atomic rewrite of ``run.json`` (cheap: no fsync; a crash keeps the last record).

        No ``indent``: json's C encoder only runs without it, and this runs per state change.
        """
        target = os.path.join(self.dir, RECORD)
        tmp = os.path.join(self.dir, f".{RECORD}.tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(self.to_json(), default=str))
        os.replace(tmp, target)


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

    def create(self, pipeline: str) -> RunRecord:
        """Make a fresh run folder (with its sub-folders) and its first record."""
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            run_id = new_run_id(pipeline)
            path = self.root / run_id
            try:
                path.mkdir()
                break
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
                runs.append(_read(entry / RECORD))
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
            return _read(exact)
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
