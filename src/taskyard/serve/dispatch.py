"""The bounded worker queue between the store and the submitter.

The queue itself is the ``requests`` table (state ``accepted``), so nothing accepted lives only
in memory. A dispatcher thread hands queued requests, oldest first, to at most ``workers``
worker threads, under the per-(repo, branch) policy:

* one run at a time per (repo, branch): a later push to the same branch waits for the earlier
  one (``queue``, the default for pushes: every commit gets its run, in push order);
* ``latest-wins``: a queued, not yet started request is marked ``superseded`` when a newer one
  for the same (repo, branch, pipeline) is queued; a run already started is left to finish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from taskyard.serve.store import (
    ACCEPTED,
    FAILED,
    SUCCEEDED,
    EventStore,
    Stored,
)
from taskyard.serve.submit import Submitter

log = logging.getLogger("taskyard.serve")
WINDOW = 500  # queued rows looked at per pass (oldest first)


class Dispatcher:
    def __init__(
        self,
        store: EventStore,
        submitter: Submitter,
        workers: int,
        on_done: Callable[[Stored, str], None] | None = None,
    ) -> None:
        self.store, self.submitter, self.workers = store, submitter, workers
        self.on_done = on_done
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._threads: dict[int, threading.Thread] = {}
        self._loop = threading.Thread(target=self._run, name="dispatcher", daemon=True)

    def start(self) -> None:
        self._loop.start()
        self.notify()

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
        self.store.mark_running([item.seq for item in starts])
        for item in starts:
            thread = threading.Thread(
                target=self._work, args=(item,), name=f"run-{item.seq}", daemon=True
            )
            with self._lock:
                self._threads[item.seq] = thread
            log.info("run started", extra={"fields": _fields(item)})
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

    def _work(self, item: Stored) -> None:
        try:
            result = self.submitter.submit(item)
        except Exception as e:  # a submitter bug fails the request, not the listener
            log.exception("submit failed", extra={"fields": _fields(item)})
            self.store.transition(item.seq, FAILED, detail=f"submitter error: {e}")
            state = FAILED
        else:
            # an interrupted run goes back to the queue: a restart runs it again
            state = ACCEPTED if result.interrupted else SUCCEEDED if result.ok else FAILED
            self.store.transition(
                item.seq,
                state,
                run_id=result.run_id,
                exit_code=result.exit_code,
                detail=result.detail,
            )
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
