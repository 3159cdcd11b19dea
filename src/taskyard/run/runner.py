"""The local runner: a pipeline's DAG as subprocesses, with Tekton's semantics.

One scheduling thread (the caller's) owns the run record; each started task gets a worker
thread that runs its attempts and reports back through a queue, so the record, ``run.json``
and the progress display change in one place, in order.

Semantics, as Tekton's (so a local run behaves like the cluster run):
- tasks start when their dependencies (``run_after`` + tasks whose results they read) are done,
  at most ``max_parallel`` at a time;
- ``when`` is evaluated on resolved inputs; a when-skipped task's ``run_after`` dependents still
  run, but a task reading results of a skipped or failed task is skipped, and so are the
  dependents of a task skipped for that reason;
- after a failure no new task starts (running ones finish), then ``finally`` tasks always run,
  seeing ``$(tasks.status)`` / ``$(tasks.T.status)``;
- a task timeout (per attempt, as Tekton's) and the pipeline timeout kill the process group;
  the pipeline timeout stops the DAG, and ``finally`` still runs (Tekton's ``timeouts.tasks``);
- Ctrl-C stops every running task and does not start ``finally``;
- a task with a ``matrix`` runs once per combination ("trials", records ``T[0]``, ``T[1]``…,
  each with its own results folder and log ``T.0``…), the trials sharing the ``max_parallel``
  slots with everything else; each is retried and timed out on its own, as each fanned-out
  TaskRun is (tektoncd/pipeline docs/matrix.md "Retries"). The task fails when any trial
  failed and all are done, as Tekton's (pkg/reconciler/pipelinerun/resources/
  pipelinerunresolution.go ``isFailure``: "If the PipelineTask has a Matrix, isFailure returns
  true if any run has failed and all other runs are done"); once it has, trials not yet
  started are skipped, like any task after a failure. Downstream its results are JSON lists
  in combination order (docs/matrix.md "Results from fanned out Matrixed PipelineTasks").

Every attempt of a task is started *and waited for* on that task's worker thread: a step's
parent-death signal (run/executor.py) fires when the thread that forked it exits, so the
thread must outlive the step, which it does (``_attempts`` returns only after ``wait`` has
reaped it; only a runner bug escaping ``wait`` ends it early, and then the step is stopped).

Secrets: ``self.params`` and the in-memory record keep real values (bindings need them);
``run.json`` stores them redacted (run/store.py), and what the runner itself writes into a
task's log is redacted too.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from taskyard._os import empty_dir
from taskyard.errors import RunError
from taskyard.home import default_tracking_uri
from taskyard.redact import redact
from taskyard.run.executor import Executor, Invocation, Process, SubprocessExecutor
from taskyard.run.resolve import (
    Context,
    MissingResult,
    bind_params,
    consumed_tasks,
    invocation,
    when_skip_reason,
)
from taskyard.run.store import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    TERMINAL,
    RunRecord,
    RunStore,
    TaskRecord,
)
from taskyard.spec import PipelineSpec, PipelineTask

# The pipeline param the runner fills with the taskyard home's MLflow store when unset.
MLFLOW_PARAM = "mlflow-tracking-uri"


class Observer(Protocol):
    """Told about every change of the run record (the progress display is one)."""

    def started(self, run: RunRecord) -> None: ...

    def changed(self, run: RunRecord, task: str) -> None: ...

    def finished(self, run: RunRecord) -> None: ...


def resolve_params(spec: PipelineSpec, given: Mapping[str, str]) -> dict[str, str]:
    """Pipeline params: the user's values over the spec's defaults; unknown/missing -> RunError."""
    known = [p.name for p in spec.params]
    for key in given:
        if key not in known:
            raise RunError(
                f"unknown param {key!r} for pipeline {spec.name!r}",
                "known: " + (", ".join(known) or "none"),
            )
    out = {p.name: p.default for p in spec.params if p.default is not None}
    out.update(given)
    for p in spec.params:
        if p.name in given and (why := p.problem(given[p.name])):
            raise RunError(f"param {p.name!r} of pipeline {spec.name!r}: {why}")
    missing = [p.name for p in spec.params if p.name not in out]
    if missing:
        names = ", ".join(repr(m) for m in missing)
        flags = " ".join(f"-p {m}=VALUE" for m in missing)
        raise RunError(f"missing required param {names} for pipeline {spec.name!r}", flags)
    if MLFLOW_PARAM in known and MLFLOW_PARAM not in given:
        out[MLFLOW_PARAM] = default_tracking_uri()
    return out


def resolve_workspaces(spec: PipelineSpec, given: Mapping[str, str | Path]) -> dict[str, Path]:
    """``--workspace NAME=PATH`` bindings, checked: known name, existing folder."""
    known = [w.name for w in spec.workspaces]
    out = {}
    for key, value in given.items():
        if key not in known:
            raise RunError(
                f"unknown workspace {key!r} for pipeline {spec.name!r}",
                "known: " + (", ".join(known) or "none"),
            )
        path = Path(value).expanduser().resolve()
        if not path.is_dir():
            raise RunError(f"workspace {key!r}: {path} is not a folder")
        out[key] = path
    return out


# run.json is rewritten at most this often while tasks change (and always at the run's end).
FLUSH_S = 0.05


@dataclass
class _Active:
    """A started task, as the scheduler and its worker thread share it (under the lock)."""

    proc: Process | None = None
    stop_reason: str = ""
    stop_state: str = FAILED


class Runner:
    """Runs one pipeline once. Build it (params are checked here), then call :meth:`run`."""

    def __init__(
        self,
        spec: PipelineSpec,
        params: Mapping[str, str] | None = None,
        workspaces: Mapping[str, str | Path] | None = None,
        *,
        max_parallel: int = 4,
        executor: Executor | None = None,
        store: RunStore | None = None,
        observer: Observer | None = None,
        run_id: str | None = None,
        trigger: Mapping[str, str] | None = None,
    ) -> None:
        if max_parallel < 1:
            raise RunError(f"--max-parallel must be at least 1, got {max_parallel}")
        self.spec = spec
        self.params = resolve_params(spec, params or {})
        self.bound = resolve_workspaces(spec, workspaces or {})
        self.max_parallel = max_parallel
        self.executor: Executor = executor or SubprocessExecutor()
        self.store = store or RunStore()
        self.observer = observer
        self.run_id = run_id
        self.trigger = dict(trigger or {})
        self._events: queue.Queue[tuple] = queue.Queue()
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._stopping = ""  # why no new DAG task starts
        self._timed_out = False
        self._cancelled = False
        self._dirty = False
        self._dirty_names: set[str] = set()
        self._saved_at = 0.0  # time.monotonic() of the last run.json write
        # Scheduling memos, so a round costs what changed, not what is pending: the dependency
        # a waiting task last waited on, and the tasks that were ready but found no free slot
        # (their skip decision is made: every input of it is final once the deps are done).
        self._blocker: dict[str, str] = {}
        self._slot_wait: set[str] = set()
        # Each task with its dependencies, computed once: the scheduler asks on every round.
        self._graph = {pt.name: (pt, spec.dependencies(pt)) for pt in spec.all_tasks}
        self._notes: dict[str, str] = {}  # shown as the reason of a task that succeeded
        # matrixed task -> its trials not started yet (trial record name, invocation)
        self._trials: dict[str, list[tuple[str, Invocation]]] = {}

    # ---- the run ---------------------------------------------------------------------------
    def run(self) -> RunRecord:
        spec = self.spec
        rec = self.record = self.store.create(spec.name, self.run_id)
        rec.params = dict(self.params)
        rec.trigger = self.trigger
        rec.executor = self.executor.name
        self.workspaces: dict[str, Path | None] = {}
        for w in spec.workspaces:
            if w.name in self.bound:
                self.workspaces[w.name] = self.bound[w.name]
            elif w.optional:
                self.workspaces[w.name] = None  # unbound, as in a PipelineRun that omits it
            else:
                path = rec.path / "workspaces" / w.name
                path.mkdir()
                self.workspaces[w.name] = path
        rec.workspaces = {k: str(v) if v else None for k, v in self.workspaces.items()}
        for pt in spec.all_tasks:
            rec.tasks[pt.name] = TaskRecord(
                name=pt.name,
                task=pt.task.name,
                finally_=spec.is_finally(pt.name),
                retries=pt.retries,
                log=str(rec.path / "logs" / f"{pt.name}.log"),
            )
            if not pt.matrix:
                continue
            for i, combination in enumerate(pt.combinations()):
                name = trial_name(pt.name, i)
                rec.tasks[name] = TaskRecord(
                    name=name,
                    task=pt.task.name,
                    retries=pt.retries,
                    log=str(rec.path / "logs" / f"{trial_file(pt.name, i)}.log"),
                )
                self._notes[name] = combination_text(combination)
        self.ctx = Context(spec, rec.id, self.params, rec.tasks)
        rec.status = RUNNING
        rec.save()
        if self.observer:
            self.observer.started(rec)
        deadline = time.monotonic() + spec.timeout if spec.timeout else None
        try:
            self._phase([spec.get(n) for n in spec.order()], deadline, final=False)
            if not self._cancelled:
                self._phase(list(spec.finally_), None, final=True)
        except KeyboardInterrupt:
            self._cancel()
        except BaseException:
            self._cancel()  # a runner bug: leave no task process behind, keep the record
            self._finish()
            raise
        self._finish()
        return rec

    def _phase(self, tasks: list[PipelineTask], deadline: float | None, *, final: bool) -> None:
        pending = [pt.name for pt in tasks]
        while True:
            pending = self._schedule(pending, final)
            if not self._threads:
                for name in pending:  # nothing running and nothing startable: cannot happen
                    self._skip(name, "not started", "parent")
                return
            flush_in = self._flush()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if flush_in is not None and (timeout is None or flush_in < timeout):
                timeout, flush_due = flush_in, True
            else:
                flush_due = False
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                if flush_due:
                    continue  # run.json's write is due: the top of the loop does it
                deadline = None
                self._timed_out = True
                why = f"pipeline timeout of {self.spec.timeout}s reached"
                self._stopping = self._stopping or why
                self._stop_all(why, FAILED)
                continue
            self._apply(event)

    def _schedule(self, pending: list[str], final: bool) -> list[str]:
        """Start, skip or fail every task that can be decided now; return the rest."""
        records = self.record.tasks
        progressed = True
        while progressed:
            progressed = False
            for name in list(pending):
                pt, deps = self._graph[name]
                if self._stopping and not final and name not in self._trials:
                    self._skip(name, f"not started: {self._stopping}", "parent")
                elif not self._deps_done(name, deps, records):
                    continue
                elif name in self._slot_wait and len(self._threads) >= self.max_parallel:
                    continue  # still no free slot
                elif not self._decide(pt, final):
                    self._slot_wait.add(name)
                    continue  # waiting for a free slot
                pending.remove(name)
                progressed = True
        return pending

    def _deps_done(self, name: str, deps: set[str], records: dict[str, TaskRecord]) -> bool:
        """All of ``deps`` are terminal; rechecks the one it waited on last time first."""
        blocker = self._blocker.get(name)
        if blocker is not None and records[blocker].state not in TERMINAL:
            return False
        for dep in deps:
            if records[dep].state not in TERMINAL:
                self._blocker[name] = dep
                return False
        self._blocker.pop(name, None)
        return True

    def _decide(self, pt: PipelineTask, final: bool) -> bool:
        """Skip, fail or start ``pt`` (all its dependencies are done); False: no free slot."""
        if pt.name in self._trials:  # a matrix part-way started
            return self._fan_out(pt)
        records = self.record.tasks
        for dep in sorted(consumed_tasks(pt)):
            if records[dep].state != SUCCEEDED:
                state = records[dep].state.lower()
                self._skip(pt.name, f"results of task {dep!r} are missing ({state})", "results")
                return True
        if not final:
            for dep in sorted(self.spec.dependencies(pt)):
                parent = records[dep]
                if parent.state == SKIPPED and parent.skip_kind != "when":
                    self._skip(pt.name, f"parent task {dep!r} was skipped", "parent")
                    return True
        try:
            reason = when_skip_reason(pt, self.ctx)
        except MissingResult as e:
            self._skip(pt.name, str(e), "results")
            return True
        if reason:
            self._skip(pt.name, reason, "when")
            return True
        if len(self._threads) >= self.max_parallel:
            return False
        want = pt.task.resources.gpu
        if want and self.executor.gpus() < want:
            have = self.executor.gpus()
            if pt.task.resources.gpu_fallback == "error":
                self._end(pt.name, FAILED, f"needs {want} GPU(s), this host has {have}")
                return True
            self._notes[pt.name] = f"no GPU here ({have} of {want}): ran on the CPU"
        if pt.matrix:
            return self._fan_out(pt)
        try:
            params = bind_params(pt, self.ctx)
            results_dir = self.record.path / "results" / pt.name
            if pt.task.results:  # a folder per task only when it has results (disk is slow)
                results_dir.mkdir(parents=True, exist_ok=True)
            inv = invocation(
                pt, params, self.workspaces, results_dir, self.record.path, self.executor.layout
            )
        except RunError as e:
            self._end(pt.name, FAILED, str(e))
            return True
        self._start(pt, inv)
        return True

    # ---- matrix: one trial per combination --------------------------------------------------
    def _fan_out(self, pt: PipelineTask) -> bool:
        """Bind every trial once, then start trials while slots are free; True when all are."""
        if pt.name not in self._trials:
            trials = []
            for i, combination in enumerate(pt.combinations()):
                name = trial_name(pt.name, i)
                try:
                    params = bind_params(pt, self.ctx, combination)
                    folder = self.record.path / "results" / trial_file(pt.name, i)
                    if pt.task.results:
                        folder.mkdir(parents=True, exist_ok=True)
                    inv = invocation(
                        pt,
                        params,
                        self.workspaces,
                        folder,
                        self.record.path,
                        self.executor.layout,
                        name=trial_file(pt.name, i),
                    )
                except RunError as e:
                    for j in range(len(pt.combinations())):
                        self._skip(trial_name(pt.name, j), "not started", "parent")
                    self._end(pt.name, FAILED, f"{name}: {e}")
                    return True
                trials.append((name, inv))
            self._trials[pt.name] = trials
            rec = self.record.tasks[pt.name]
            rec.state, rec.started, rec.attempts = RUNNING, time.time(), 1
            with open(rec.log, "a") as index:
                for name, _ in trials:
                    log = self.record.tasks[name].log
                    index.write(redact(f"{name} ({self._notes[name]}): {log}") + "\n")
            self._changed(pt.name)
        left = self._trials[pt.name]
        while left and not self._stopping and len(self._threads) < self.max_parallel:
            name, inv = left.pop(0)
            self._start(pt, inv, name)
        if self._stopping:
            for name, _ in left:
                self._skip(name, f"not started: {self._stopping}", "parent")
            left.clear()
        if left:
            return False
        self._close_matrix(pt)
        return True

    def _close_matrix(self, pt: PipelineTask) -> None:
        """End a matrixed task once every trial is done: failed if any failed, else its
        results as JSON lists in combination order."""
        rec = self.record.tasks[pt.name]
        if rec.state in TERMINAL or self._trials.get(pt.name):
            return
        trials = [self.record.tasks[trial_name(pt.name, i)] for i in range(len(pt.combinations()))]
        if any(t.state not in TERMINAL for t in trials):
            return
        states = [t.state for t in trials]
        if FAILED in states:
            bad = [t for t in trials if t.state == FAILED]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            self._end(pt.name, FAILED, f"trial {bad[0].name} failed: {bad[0].reason}{more}")
        elif CANCELLED in states:
            self._end(pt.name, CANCELLED, "cancelled (interrupted)")
        elif SKIPPED in states:
            self._skip(
                pt.name, f"{states.count(SKIPPED)} of {len(trials)} trials not run", "parent"
            )
            rec.ended = time.time()
        else:
            results = {
                r.name: json.dumps([t.results[r.name] for t in trials])
                for r in pt.task.results
                if all(r.name in t.results for t in trials)
            }
            self._end(pt.name, SUCCEEDED, f"{len(trials)} trials", results)

    def _trial_parent(self, name: str) -> PipelineTask | None:
        base, sep, _ = name.partition("[")
        return self.spec.get(base) if sep else None

    # ---- task state changes (scheduler thread only) ----------------------------------------
    def _start(self, pt: PipelineTask, inv: Invocation, job: str = "") -> None:
        """Start ``pt`` (or its trial ``job``) on a worker thread."""
        job = job or pt.name
        rec = self.record.tasks[job]
        rec.state = RUNNING
        rec.started = time.time()
        rec.attempts = 1
        self._active[job] = _Active()
        thread = threading.Thread(
            target=self._work, args=(pt, inv, self._active[job], job), daemon=True
        )
        self._threads[job] = thread
        thread.start()
        self._changed(job)

    def _skip(self, name: str, reason: str, kind: str) -> None:
        rec = self.record.tasks[name]
        rec.state = SKIPPED
        rec.reason = reason
        rec.skip_kind = kind
        self._changed(name)

    def _end(self, name: str, state: str, reason: str, results: dict | None = None) -> None:
        rec = self.record.tasks[name]
        rec.state = state
        rec.reason = reason or (self._notes.get(name, "") if state == SUCCEEDED else "")
        rec.results = results or {}
        rec.ended = time.time()
        if rec.started is None:
            rec.started = rec.ended
        if state == FAILED and not rec.finally_:
            self._stopping = self._stopping or f"task {name!r} failed"
        self._changed(name)

    def _apply(self, event: tuple) -> None:
        kind, name, *rest = event
        if kind == "attempt":
            rec = self.record.tasks[name]
            rec.attempts, previous = rest
            rec.reason = f"attempt {rec.attempts - 1} failed: {previous}"
            self._changed(name)
        elif kind == "done":
            self._threads.pop(name, None)
            self._active.pop(name, None)
            self._end(name, *rest)
            if parent := self._trial_parent(name):
                self._close_matrix(parent)

    def _changed(self, name: str) -> None:
        self._dirty = True
        self._dirty_names.add(name)
        if self.observer:
            self.observer.changed(self.record, name)

    def _flush(self) -> float | None:
        """Write ``run.json`` once per scheduling round, not once per change, and at most
        once per FLUSH_S: a change is on disk within FLUSH_S, and a burst of rounds (a wide
        DAG of short tasks) costs one write, whose size grows with the run. The record
        re-encodes only the tasks that changed (run/store.py ``RunRecord.save``). Returns the
        seconds until a held-back write is due, None when nothing waits."""
        if not self._dirty:
            return None
        wait = self._saved_at + FLUSH_S - time.monotonic()
        if wait > 0:
            return wait
        self._dirty = False
        changed, self._dirty_names = self._dirty_names, set()
        self.record.save(changed)
        self._saved_at = time.monotonic()
        return None

    def _stop_all(self, reason: str, state: str) -> None:
        with self._lock:
            for active in self._active.values():
                active.stop_reason = reason
                active.stop_state = state
                if active.proc is not None:
                    active.proc.stop()

    def _cancel(self) -> None:
        """Ctrl-C: stop every running task, wait for the workers to report, start nothing."""
        self._cancelled = True
        self._stopping = "cancelled"
        self._stop_all("cancelled (interrupted)", CANCELLED)
        while self._threads:
            self._flush()
            try:
                self._apply(self._events.get(timeout=0.5))
            except queue.Empty:
                for name, thread in list(self._threads.items()):
                    if not thread.is_alive() and self._events.empty():
                        self._threads.pop(name)
                        self._end(name, CANCELLED, "cancelled (interrupted)")
            except KeyboardInterrupt:
                self._stop_all("cancelled (interrupted)", CANCELLED)

    def _finish(self) -> None:
        rec = self.record
        for pt in self.spec.tasks:
            if pt.matrix and rec.tasks[pt.name].state == RUNNING:  # Ctrl-C, a runner bug
                for name, _ in self._trials.get(pt.name, []):
                    self._skip(name, "not started", "parent")
                self._trials.pop(pt.name, None)
                self._close_matrix(pt)
        for t in rec.tasks.values():
            if t.state == PENDING:
                t.state = CANCELLED if self._cancelled else SKIPPED
                t.reason = t.reason or ("cancelled" if self._cancelled else "not started")
        for r in self.spec.results:
            with contextlib.suppress(MissingResult):
                rec.results[r.name] = self.ctx.substitute(r.value)
        failed = [t.name for t in rec.tasks.values() if t.state == FAILED and "[" not in t.name]
        skipped = any(t.state == SKIPPED for t in rec.tasks.values())
        if self._cancelled:
            rec.status, rec.reason = CANCELLED, "Cancelled: interrupted"
        elif self._timed_out:
            rec.status = FAILED
            rec.reason = f"PipelineRunTimeout: timeout of {self.spec.timeout}s reached"
        elif failed:
            rec.status, rec.reason = FAILED, "Failed: task " + ", ".join(failed) + " failed"
        else:
            rec.status, rec.reason = SUCCEEDED, "Completed" if skipped else "Succeeded"
        rec.ended = time.time()
        rec.save()
        if self.observer:
            self.observer.finished(rec)

    # ---- worker thread ---------------------------------------------------------------------
    def _work(self, pt: PipelineTask, inv: Invocation, active: _Active, job: str) -> None:
        try:
            outcome = self._attempts(pt, inv, active, job)
        except Exception as e:  # a runner bug must not hang the run
            outcome = (FAILED, f"runner error: {type(e).__name__}: {e}", {})
        self._events.put(("done", job, *outcome))

    def _attempts(self, pt: PipelineTask, inv: Invocation, active: _Active, job: str) -> tuple:
        total = pt.retries + 1
        reason = ""
        log_path = self.record.tasks[job].log
        with open(log_path, "ab", buffering=0) as log:

            def note(line: str) -> None:
                log.write((redact(line) + "\n").encode())

            for key in dict.fromkeys((pt.name, job)):
                if key in self._notes:
                    note(f"taskyard: {self._notes[key]}")
            for attempt in range(1, total + 1):
                if attempt > 1:
                    self._events.put(("attempt", job, attempt, reason))
                    empty_dir(inv.results_dir)  # a retry starts with no results, as in Tekton
                if total > 1:
                    after = f" (previous: {reason})" if reason else ""
                    note(f"=== attempt {attempt}/{total}{after} ===")
                try:
                    proc = self.executor.start(inv, log)
                except OSError as e:
                    reason = f"cannot start {inv.command[0]!r}: {e.strerror or e}"
                    note(f"error: {reason}")
                    continue
                with self._lock:
                    active.proc = proc
                    if active.stop_reason:
                        proc.stop()
                code = proc.wait(pt.timeout)
                if code is None:
                    proc.stop()
                    proc.wait()
                with self._lock:
                    active.proc = None
                    if active.stop_reason:
                        return active.stop_state, active.stop_reason, {}
                if code == 0:
                    return SUCCEEDED, "", _read_results(pt, inv.results_dir)
                if code is None:
                    reason = f"timed out after {pt.timeout}s"
                    note(f"error: {reason}; its process group was killed")
                else:
                    reason = _step_error(log_path) or _exit_reason(code)
        if total > 1:
            reason += f" (after {total} attempts)"
        return FAILED, reason, {}


def trial_name(task: str, index: int) -> str:
    """The record of one trial of a matrixed task: ``train[0]``."""
    return f"{task}[{index}]"


def trial_file(task: str, index: int) -> str:
    """Its results folder, log and executor name: ``train.0`` (no glob characters)."""
    return f"{task}.{index}"


def combination_text(combination: Mapping[str, str]) -> str:
    """``overrides=n_estimators=50,max_depth=3``: what a trial ran with, for people."""
    return " ".join(f"{k}={v}" for k, v in combination.items())


def _step_error(log: Path | str, tail: int = 8192) -> str:
    """The step's own error line from the last attempt's output, or "" (then the exit code).

    First the contract's ``error: …`` line (or argparse's ``PROG: error: …``); a step of a
    fork's own may not keep the contract, so next the last line that reads as an error: a
    Python exception (the last line of a traceback, ``ValueError: boom``) or a tool's
    ``Error:`` / ``fatal:`` / ``ERROR`` line.
    Ordinary output is never taken for the reason: a plain last line may be a progress message.
    """
    import re

    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # colours of pytest, rich, pip
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"=== attempt \d+/\d+", line)]
    lines = lines[starts[-1] + 1 :] if starts else lines  # this attempt's, not an earlier one's
    # argparse's `PROG: error: MESSAGE`; PROG may be `python -m taskyard.steps.x`
    usage = re.compile(r"^[\w./ -]{1,120}: error: (\S.*)$")
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ").strip()
        if m := usage.match(line):
            return m.group(1).strip()
    exception = re.compile(
        r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Failure)(?::\s.*)?$"
        r"|^(?:Error|ERROR|error|fatal|FATAL|Fatal)(?::|\s)\s*\S.*$"
    )
    for line in reversed(lines):
        stripped = line.strip()
        if line[:1].isspace() or not exception.match(stripped):
            continue  # indented: a traceback's frames and source lines
        reason = " ".join(stripped.split())
        return reason if len(reason) <= 300 else reason[:299] + "…"
    return ""


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _read_results(pt: PipelineTask, folder: Path) -> dict[str, str]:
    out = {}
    for r in pt.task.results:
        path = folder / r.name
        if path.is_file():
            out[r.name] = path.read_bytes().decode(errors="replace")
    return out


def run_pipeline(
    spec: PipelineSpec,
    params: Mapping[str, str] | None = None,
    workspaces: Mapping[str, str | Path] | None = None,
    **options: object,
) -> RunRecord:
    """Run ``spec`` once and return its record (see :class:`Runner` for the options)."""
    return Runner(spec, params, workspaces, **options).run()  # type: ignore[arg-type]
