"""The bounded worker queue between the store and the submitter.

The queue itself is the ``requests`` table (state ``accepted``), so nothing accepted lives only
in memory. A dispatcher thread hands queued requests, oldest first, to at most ``workers``
worker threads, under the per-(repo, branch) policy:

* one run at a time per (repo, branch): a later push to the same branch waits for the earlier
  one (``queue``, the default for pushes: every commit gets its run, in push order);
* ``latest-wins``: a queued, not yet started request is marked ``superseded`` when a newer one
  for the same (repo, branch, pipeline) is queued; a run already started is left to finish.

On start, :meth:`Dispatcher.resume` settles the rows a previous listener left ``running``
(adopt the live run, record a finished one, re-queue a lost one; see ``submit.py``). Adopted
runs hold their (repo, branch) and a worker slot like any other. The params a run gets are
rebuilt from the config when it starts (``resolve``): stored params are redacted.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from taskyard.redact import redact
from taskyard.serve.events import RunRequest
from taskyard.serve.store import (
    ACCEPTED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    EventStore,
    Stored,
)
from taskyard.serve.submit import SubmitResult, Submitter

log = logging.getLogger("taskyard.serve")
WINDOW = 500  # queued rows looked at per pass (oldest first)


class Dispatcher:
    def __init__(
        self,
        store: EventStore,
        submitter: Submitter,
        workers: int,
        on_done: Callable[[Stored, str], None] | None = None,
        resolve: Callable[[RunRequest], dict[str, str]] | None = None,
    ) -> None:
        self.store, self.submitter, self.workers = store, submitter, workers
        self.on_done = on_done
        # The params a request runs with; default: as stored (tests without a config).
        self.resolve = resolve or (lambda request: dict(request.params))
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._threads: dict[int, threading.Thread] = {}
        self._loop = threading.Thread(target=self._run, name="dispatcher", daemon=True)

    def start(self) -> dict[str, int]:
        """Settle what a previous listener left running, then start dispatching."""
        settled = self.resume()
        self._loop.start()
        self.notify()
        return settled

    def resume(self) -> dict[str, int]:
        """For each row left ``running``: adopt, record or re-queue (counts by action)."""
        counts = {"adopt": 0, "record": 0, "requeue": 0}
        for item in self.store.in_flight():
            try:
                found = self.submitter.recover(item)
            except Exception as e:  # cannot tell: run it again rather than lose it
                log.exception("recover failed", extra={"fields": _fields(item)})
                self.store.requeue([item.seq], detail=f"recover error: {e}")
                counts["requeue"] += 1
                continue
            counts[found.action] += 1
            fields = {**_fields(item), "run_id": item.run_id, "reason": found.reason}
            if found.action == "adopt" and found.pid is not None:
                log.info("run adopted", extra={"fields": {**fields, "pid": found.pid}})
                self._spawn(item, adopt=found.pid)
            elif found.action == "record" and found.result is not None:
                state = self._record(item, found.result)
                log.info("run finished", extra={"fields": {**fields, "state": state}})
            else:
                log.info("run re-queued", extra={"fields": fields})
                self.store.requeue([item.seq], detail=found.reason)
        return counts

    def notify(self) -> None:
        self._wake.set()

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._threads)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if not self._stop.is_set():
                try:
                    self.dispatch()
                except Exception:  # keep dispatching: a bad row must not stop the queue
                    log.exception("dispatch failed")

    def dispatch(self) -> None:
        for item in self.store.supersede():
            log.info("superseded", extra={"fields": _fields(item)})
        starts = self._select(self.store.queued(limit=WINDOW))
        if not starts:
            return
        ids = {item.seq: self.submitter.new_run_id(item) for item in starts}
        try:
            self.store.mark_running(ids)
        except BaseException:
            with self._lock:
                self._busy.difference_update(item.request.key for item in starts)
            raise
        for item in starts:
            item = dataclasses.replace(item, state=RUNNING, run_id=ids[item.seq])
            log.info("run started", extra={"fields": {**_fields(item), "run_id": item.run_id}})
            self._spawn(item)

    def _spawn(self, item: Stored, adopt: int | None = None) -> None:
        thread = threading.Thread(
            target=self._work, args=(item, adopt), name=f"run-{item.seq}", daemon=True
        )
        with self._lock:
            self._busy.add(item.request.key)
            self._threads[item.seq] = thread
        thread.start()

    def _select(self, queued: list[Stored]) -> list[Stored]:
        """What to start now (oldest first), within the worker bound and the key policy."""
        starts: list[Stored] = []
        for item in queued:
            req = item.request
            with self._lock:
                if len(self._threads) + len(starts) >= self.workers:
                    break
                if req.key in self._busy:
                    continue
                self._busy.add(req.key)
            starts.append(item)
        return starts

    def _work(self, item: Stored, adopt: int | None = None) -> None:
        try:
            if adopt is not None:
                result = self.submitter.adopt(item, adopt)
            else:
                request = item.request.model_copy(update={"params": self.resolve(item.request)})
                result = self.submitter.submit(
                    dataclasses.replace(item, request=request),
                    lambda pid: self.store.set_pid(item.seq, pid),
                )
        except Exception as e:  # a submitter bug or a vanished config fails the request
            log.warning(
                "submit failed",
                extra={"fields": {**_fields(item), "error": redact(f"{type(e).__name__}: {e}")}},
            )
            self.store.transition(item.seq, FAILED, detail=f"cannot run: {e}")
            state = FAILED
        else:
            state = self._record(item, result)
            log.info(
                "run finished",
                extra={"fields": {**_fields(item), "state": state, "run_id": result.run_id}},
            )
        finally:
            with self._lock:
                self._busy.discard(item.request.key)
                self._threads.pop(item.seq, None)
            self.notify()
        if self.on_done:
            self.on_done(item, state)

    def _record(self, item: Stored, result: SubmitResult) -> str:
        # an interrupted run goes back to the queue: a restart runs it again
        state = ACCEPTED if result.interrupted else SUCCEEDED if result.ok else FAILED
        self.store.transition(
            item.seq,
            state,
            run_id=result.run_id,
            exit_code=result.exit_code,
            detail=result.detail,
        )
        return state

    def stop(self, grace: float) -> None:
        """Start nothing new; wait ``grace`` seconds for runs, then cancel what is left."""
        self._stop.set()
        self._wake.set()
        self._loop.join(timeout=5)
        deadline = time.monotonic() + grace
        for thread in self._snapshot():
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._snapshot():
            log.warning("cancelling runs still in flight after the grace period")
            self.submitter.cancel_all()
            for thread in self._snapshot():
                thread.join(timeout=15)

    def _snapshot(self) -> list[threading.Thread]:
        with self._lock:
            return [t for t in self._threads.values() if t.is_alive()]


def _fields(item: Stored) -> dict[str, object]:
    r = item.request
    return {
        "seq": item.seq,
        "pipeline": r.pipeline,
        "repo": r.repo,
        "branch": r.branch,
        "commit": r.commit,
        "delivery": r.delivery,
    }
