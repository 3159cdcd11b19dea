"""Runs an engine's DAG: the scheduling both emulations share, the semantics each engine owns.

An :class:`Engine` (engines/tekton.py, engines/argo.py) turns the YAML into :class:`Node` s and
answers, for a node whose dependencies are all done, what happens to it (:meth:`Engine.decide`:
skip, fail, or run these containers) and what its outputs are once its containers exited
(:meth:`Engine.outputs`). The scheduler owns the rest, which both engines document alike:

- a node is decided once every node in ``deps`` is terminal, at most ``max_parallel`` run;
- after a DAG node fails no new DAG node starts (running ones finish): Tekton's behaviour, and
  Argo's ``failFast`` default (docs/fields.md, DAGTemplate ``failFast``);
- ``final`` nodes (Tekton ``finally``, Argo's ``onExit`` DAG) run after the DAG, whatever its
  outcome, with their own deadline (:meth:`Engine.deadlines`);
- retries re-run the whole pod; a node's timeout is per attempt; an elapsed phase deadline
  stops what runs and fails the run; Ctrl-C stops everything and starts nothing more.

The run is recorded in the ordinary run store, so ``taskyard runs`` shows it like any other.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from taskyard.engines.pods import Container, Pods
from taskyard.errors import RunError
from taskyard.redact import redact
from taskyard.run.runner import Observer, _exit_reason, _step_error
from taskyard.run.store import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    TERMINAL,
    RunRecord,
    TaskRecord,
)


@dataclass
class Node:
    name: str
    ref: str  # the Task / template it runs, for the run table
    deps: frozenset[str] = frozenset()
    final: bool = False
    retries: int = 0
    timeout: float | None = None
    extra: dict = field(default_factory=dict)  # the engine's own data for the node
    # A fan-out's join (its deps: the trials): decided even after a failure, to fail with them.
    join: bool = False


@dataclass
class Skip:
    reason: str
    kind: str = "when"  # "when": its own condition; "parent"/"results": inherited


@dataclass
class Fail:
    reason: str


@dataclass
class Start:
    containers: list[Container]


@dataclass
class Done:
    """Succeeded without a pod: a fan-out's join node (Tekton matrix, Argo withItems), whose
    outputs are its trials' aggregated."""

    results: dict[str, str]
    reason: str = ""


Decision = Skip | Fail | Start | Done


class OutputError(Exception):
    """The containers succeeded, but the engine cannot read what the node must output."""


class Engine(Protocol):
    pipeline: str
    nodes: list[Node]
    params: dict[str, str]

    def decide(self, node: Node, run: RunRecord, attempt: int) -> Decision: ...

    def outputs(self, node: Node, files: dict[str, str | None]) -> dict[str, str]: ...

    def deadlines(self) -> tuple[float | None, float | None, float | None]:
        """Seconds for (the DAG, the final nodes, the whole run); None: no limit."""
        ...

    def stopping(self, run: RunRecord) -> str:
        """Why no new DAG node may start now ("" while they may): the engine's failure rule."""
        ...

    def outcome(self, run: RunRecord) -> tuple[bool, str]:
        """(failed?, the reason the run reports) once every node is done."""
        ...

    def retries_on(self, node: Node, kind: str) -> bool:
        """Whether an attempt that ended in ``kind`` ("failed": non-zero exit; "error": the
        engine could not read its outputs) is retried."""
        ...

    def finish(self, run: RunRecord) -> None:
        """Set the run's results (and anything engine-specific) once every node is done."""
        ...


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        pods: Pods,
        record: RunRecord,
        *,
        max_parallel: int = 4,
        observer: Observer | None = None,
        after: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.pods = pods
        self.rec = record
        self.max_parallel = max_parallel
        self.observer = observer
        self.after = after
        self._events: queue.Queue[tuple] = queue.Queue()
        self._lock = threading.Lock()
        self._procs: dict[str, object] = {}
        self._stop_reason: dict[str, str] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._stopping = ""
        self._timed_out = ""
        self._cancelled = False
        self.nodes = {n.name: n for n in engine.nodes}

    def run(self) -> RunRecord:
        rec = self.rec
        for n in self.engine.nodes:
            rec.tasks[n.name] = TaskRecord(
                name=n.name,
                task=n.ref,
                finally_=n.final,
                retries=n.retries,
                log=str(rec.path / "logs" / f"{n.name}.log"),
            )
        rec.status = RUNNING
        rec.save()
        if self.observer:
            self.observer.started(rec)
        dag_s, final_s, total_s = self.engine.deadlines()
        start = time.monotonic()
        total = start + total_s if total_s else None
        try:
            dag_end = _earliest(start + dag_s if dag_s else None, total)
            self._phase([n for n in self.engine.nodes if not n.final], dag_end, "tasks")
            if not self._cancelled:
                now = time.monotonic()
                final_end = _earliest(now + final_s if final_s else None, total)
                self._phase([n for n in self.engine.nodes if n.final], final_end, "finally")
        except KeyboardInterrupt:
            self._cancel()
        except BaseException:
            self._cancel()
            self._finish()
            raise
        self._finish()
        return rec

    # ---- phases ------------------------------------------------------------------------
    def _phase(self, nodes: list[Node], deadline: float | None, what: str) -> None:
        pending = [n.name for n in nodes]
        if deadline is not None and deadline <= time.monotonic():
            for name in pending:  # no budget left for this phase at all
                self._skip(name, f"not started: the {what} timeout had already elapsed", "parent")
            self._timed_out = self._timed_out or f"timeout of the {what} reached"
            return
        expired = ""
        while True:
            if expired:
                for name in pending:
                    self._skip(name, f"not started: {expired}", "parent")
                pending = []
            pending = self._schedule(pending)
            if not self._threads:
                for name in pending:
                    self._skip(name, "not started: its dependencies can never be met", "parent")
                return
            self.rec.save()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                deadline = None
                why = expired = f"timeout of the {what} reached"
                self._timed_out = self._timed_out or why
                self._stopping = self._stopping or why
                self._stop_all(why, FAILED)
                continue
            self._apply(event)

    def _schedule(self, pending: list[str]) -> list[str]:
        records = self.rec.tasks
        progressed = True
        while progressed:
            progressed = False
            for name in list(pending):
                node = self.nodes[name]
                if self._stopping and not node.final and not node.join:
                    self._skip(name, f"not started: {self._stopping}", "parent")
                elif any(records[d].state not in TERMINAL for d in node.deps):
                    continue
                elif len(self._threads) >= self.max_parallel:
                    return pending
                else:
                    self._decide(node)
                pending.remove(name)
                progressed = True
        return pending

    def _decide(self, node: Node) -> None:
        try:
            decision = self.engine.decide(node, self.rec, 1)
        except RunError as e:
            decision = Fail(str(e))
        if isinstance(decision, Skip):
            self._skip(node.name, decision.reason, decision.kind)
        elif isinstance(decision, Fail):
            self._end(node.name, FAILED, decision.reason)
        elif isinstance(decision, Done):
            self._end(node.name, SUCCEEDED, decision.reason, decision.results)
        else:
            rec = self.rec.tasks[node.name]
            rec.state, rec.started, rec.attempts = RUNNING, time.time(), 1
            thread = threading.Thread(target=self._work, args=(node, decision), daemon=True)
            self._threads[node.name] = thread
            thread.start()
            self._changed(node.name)

    # ---- state changes (scheduler thread) ----------------------------------------------
    def _skip(self, name: str, reason: str, kind: str) -> None:
        rec = self.rec.tasks[name]
        rec.state, rec.reason, rec.skip_kind = SKIPPED, " ".join(reason.split()), kind
        if not rec.finally_:
            self._stopping = self._stopping or self.engine.stopping(self.rec)
        self._changed(name)

    def _end(self, name: str, state: str, reason: str, results: dict | None = None) -> None:
        rec = self.rec.tasks[name]
        rec.state, rec.reason, rec.results = state, " ".join(reason.split()), results or {}
        rec.ended = time.time()
        rec.started = rec.started or rec.ended
        if not rec.finally_:
            self._stopping = self._stopping or self.engine.stopping(self.rec)
        self._changed(name)

    def _apply(self, event: tuple) -> None:
        kind, name, *rest = event
        if kind == "attempt":
            rec = self.rec.tasks[name]
            rec.attempts, previous = rest
            rec.reason = f"attempt {rec.attempts - 1} failed: {previous}"
            self._changed(name)
        else:
            self._threads.pop(name, None)
            self._end(name, *rest)

    def _changed(self, name: str) -> None:
        if self.observer:
            self.observer.changed(self.rec, name)

    def _stop_all(self, reason: str, state: str) -> None:
        with self._lock:
            for name, proc in self._procs.items():
                self._stop_reason.setdefault(name, f"{state}:{reason}")
                proc.stop()  # type: ignore[attr-defined]
            for name in self._threads:
                self._stop_reason.setdefault(name, f"{state}:{reason}")

    def _cancel(self) -> None:
        self._cancelled = True
        self._stopping = "cancelled"
        self._stop_all("cancelled (interrupted)", CANCELLED)
        while self._threads:
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
        rec = self.rec
        for t in rec.tasks.values():
            if t.state == PENDING:
                t.state = CANCELLED if self._cancelled else SKIPPED
                t.reason = t.reason or ("cancelled" if self._cancelled else "not started")
        with contextlib.suppress(Exception):
            self.engine.finish(rec)
        failed, why = self.engine.outcome(rec)
        if self._cancelled:
            rec.status, rec.reason = CANCELLED, "Cancelled: interrupted"
        elif self._timed_out:
            rec.status, rec.reason = FAILED, f"Timeout: {self._timed_out}"
        else:
            rec.status, rec.reason = (FAILED if failed else SUCCEEDED), why
        rec.ended = time.time()
        if self.after:
            with contextlib.suppress(Exception):
                self.after()
        rec.save()
        if self.observer:
            self.observer.finished(rec)

    # ---- worker thread -----------------------------------------------------------------
    def _work(self, node: Node, start: Start) -> None:
        try:
            outcome = self._attempts(node, start)
        except Exception as e:  # an emulator bug must not hang the run
            outcome = (FAILED, f"runner error: {type(e).__name__}: {e}", {})
        self._events.put(("done", node.name, *outcome))

    def _attempts(self, node: Node, start: Start) -> tuple:
        total = node.retries + 1
        reason, attempt = "", 0
        log_path = self.rec.tasks[node.name].log
        with open(log_path, "ab", buffering=0) as log:
            for attempt in range(1, total + 1):
                if attempt > 1:
                    self._events.put(("attempt", node.name, attempt, reason))
                    decision = self.engine.decide(node, self.rec, attempt)
                    if not isinstance(decision, Start):
                        return FAILED, getattr(decision, "reason", "not restartable"), {}
                    start = decision
                if total > 1:
                    after = f" (previous: {reason})" if reason else ""
                    log.write(f"=== attempt {attempt}/{total}{after} ===\n".encode())
                outcome = self._pod(node, start.containers, log, log_path)
                if outcome[0] not in ("failed", "error"):
                    return outcome
                reason = outcome[1]
                if not self.engine.retries_on(node, outcome[0]):
                    break
        return FAILED, reason + (f" (after {attempt} attempts)" if attempt > 1 else ""), {}

    def _pod(self, node: Node, containers: list[Container], log, log_path: str) -> tuple:
        """One attempt: the containers in order; stop at the first that fails."""
        deadline = time.monotonic() + node.timeout if node.timeout else None
        files: dict[str, str | None] = {}
        for c in containers:
            if len(containers) > 1:
                log.write(f"--- step {c.name} ---\n".encode())
            try:
                proc = self.pods.start(c, log)
            except RunError as e:
                log.write(f"error: {redact(str(e))}\n".encode())
                return FAILED, str(e), {}
            except OSError as e:
                return "failed", f"cannot start {c.command[:1]}: {e.strerror or e}"
            with self._lock:
                self._procs[node.name] = proc
                if node.name in self._stop_reason:
                    proc.stop()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            code = proc.wait(left)
            if code is None:
                proc.stop()
                proc.wait()
            got = self.pods.collect(c, proc)
            with self._lock:
                self._procs.pop(node.name, None)
                stopped = self._stop_reason.get(node.name)
            if stopped:
                state, _, why = stopped.partition(":")
                return state, why, {}
            if code is None:
                log.write(f"error: timed out after {node.timeout:g}s\n".encode())
                return "failed", f"timed out after {node.timeout:g}s"
            if code != 0:
                return "failed", _step_error(log_path) or _exit_reason(code)
            files.update({f"{c.name}/{k}": v for k, v in got.items()})
        try:
            return SUCCEEDED, "", self.engine.outputs(node, files)
        except OutputError as e:
            log.write(f"error: {e}\n".encode())
            return "error", str(e)


def _earliest(a: float | None, b: float | None) -> float | None:
    return min(x for x in (a, b) if x is not None) if (a or b) else None
