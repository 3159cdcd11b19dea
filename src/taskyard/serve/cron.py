"""Cron schedules: fire a pipeline at each cron time, timezone aware (croniter + zoneinfo).

Missed-schedule policy (the listener was stopped across one or more fire times), per schedule:

* ``run-once`` (default): on start, fire ONE catch-up run for the most recent missed time,
  however many were missed (a retrain on current data covers them all) — like a Kubernetes
  CronJob with ``concurrencyPolicy: Replace`` catching up after downtime;
* ``skip``: start from the next fire time; missed ones are logged and dropped.

The first start of a schedule (no last fire time stored yet) catches up nothing. Each fire is
stored as delivery ``cron:<name>@<time>`` with commit key ``cron:<name>@<time>``, in the same
transaction as the new last-fire time, so a fire time starts at most one run, across restarts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from croniter import croniter

from taskyard.redact import redact, redact_values
from taskyard.serve.config import Schedule
from taskyard.serve.events import RunRequest, schedule_params
from taskyard.serve.store import EventStore

log = logging.getLogger("taskyard.serve")


def request_for(schedule: Schedule, fire: datetime) -> RunRequest:
    """The stored request of one fire time: redacted (the run's params come from the config at
    submit time, :func:`taskyard.serve.events.run_params`)."""
    stamp = fire.isoformat()
    return RunRequest(
        source="cron",
        delivery=f"cron:{schedule.name}@{stamp}",
        repo=redact(schedule.repo_url),
        branch=schedule.revision,
        commit=f"cron:{schedule.name}@{stamp}",
        pipeline=schedule.pipeline,
        params=redact_values(schedule_params(schedule)),
        concurrency=schedule.concurrency,
    )


def latest_due(schedule: Schedule, after: datetime, now: datetime) -> datetime | None:
    """The most recent fire time in ``(after, now]``, or None."""
    prev = croniter(schedule.cron, now.astimezone(schedule.zone())).get_prev(datetime)
    # get_prev is strictly before `now`; `now` itself may be a fire time.
    exact = schedule.next_after(prev)
    if exact <= now:
        prev = exact
    return prev if prev > after else None


class Scheduler:
    """One thread; sleeps until the next fire time of any schedule (or until stopped)."""

    def __init__(
        self,
        schedules: tuple[Schedule, ...],
        store: EventStore,
        notify: Callable[[], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.schedules, self.store, self.notify, self.clock = schedules, store, notify, clock
        self._next: dict[str, datetime] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cron", daemon=True)

    def catch_up(self) -> list[RunRequest]:
        """Apply the missed-schedule policy once; set up the next fire times."""
        now = self.clock()
        fired = []
        for s in self.schedules:
            last_text = self.store.last_fire(s.name)
            if last_text is None:
                self.store.set_last_fire(s.name, now.isoformat())
            else:
                due = latest_due(s, datetime.fromisoformat(last_text), now)
                if due is not None and s.missed == "run-once":
                    fired.append(self._fire(s, due, catch_up=True))
                elif due is not None:
                    self.store.set_last_fire(s.name, due.isoformat())
                    log.info("missed schedule skipped", extra={"fields": {"schedule": s.name}})
            self._next[s.name] = s.next_after(now)
        return fired

    def tick(self) -> list[RunRequest]:
        """Fire every schedule whose next time has come."""
        now = self.clock()
        fired = []
        for s in self.schedules:
            due = self._next[s.name]
            if due <= now:
                fired.append(self._fire(s, due))
                self._next[s.name] = s.next_after(max(due, now))
        return fired

    def _fire(self, s: Schedule, when: datetime, catch_up: bool = False) -> RunRequest:
        req = request_for(s, when)
        got = self.store.accept(req.delivery, "cron", [req], schedule=(s.name, when.isoformat()))
        log.info(
            "schedule fired",
            extra={
                "fields": {
                    "schedule": s.name,
                    "at": when.isoformat(),
                    "catch_up": catch_up,
                    "queued": got.queued,
                }
            },
        )
        self.notify()
        return req

    def start(self) -> None:
        self.catch_up()
        if self.schedules:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = min(self._next.values()) - self.clock()
            if self._stop.wait(timeout=min(max(wait.total_seconds(), 0.0), 60.0)):
                return
            try:
                self.tick()
            except Exception:  # a store hiccup must not end the schedule
                log.exception("cron tick failed")
