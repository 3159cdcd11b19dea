"""The durable queue behind the listener: store, restart, concurrency policies, cron."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taskyard.serve import cron
from taskyard.serve.config import Schedule
from taskyard.serve.dispatch import Dispatcher
from taskyard.serve.events import RunRequest
from taskyard.serve.store import (
    ACCEPTED,
    RUNNING,
    SUCCEEDED,
    SUPERSEDED,
    EventStore,
    Stored,
)
from taskyard.serve.submit import SubmitResult, Submitter, command
from tests.serveutil import wait_for


def req(commit: str, branch: str = "main", pipeline: str = "ci", **kw) -> RunRequest:
    return RunRequest(
        source="github",
        delivery=f"d-{commit}-{pipeline}",
        repo="acme/model",
        branch=branch,
        commit=commit,
        pipeline=pipeline,
        params={"repo-url": "file:///r.git", "revision": commit},
        **kw,
    )


class Gate(Submitter):
    """A Submitter whose runs block until released: lets a test see the queue mid-flight."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = threading.Event()
        self._lock = threading.Lock()

    def submit(
        self, item: Stored, spawned: Callable[[int], None] = lambda pid: None
    ) -> SubmitResult:
        with self._lock:
            self.started.append(item.request.commit)
        self.release.wait(timeout=20)
        return SubmitResult(ok=True, run_id=f"run-{item.request.commit}")

    def cancel_all(self) -> None:
        self.release.set()


def test_store_survives_reopen_and_resumes_in_flight(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    assert not store.accept("d1", "github", [req("a"), req("b")]).duplicate_delivery
    assert store.accept("d1", "github", [req("c")]).duplicate_delivery
    assert store.accept("d2", "github", [req("a")]).duplicates == 1
    first = store.queued()[0]
    store.transition(first.seq, RUNNING)  # the listener dies while this one runs
    store.close()

    again = EventStore(tmp_path / "events.db")
    assert again.pending == 1
    (left,) = again.in_flight()
    assert again.requeue([left.seq], detail="lost") == 1  # its run is known to be gone
    assert [s.request.commit for s in again.queued()] == ["a", "b"]
    assert again.pending == 2
    assert again.deliveries() == ["d1", "d2"]


def test_queue_policy_one_run_per_branch_in_push_order(tmp_path: Path) -> None:
    store, gate = EventStore(tmp_path / "e.db"), Gate()
    for c in ("a", "b", "c"):
        store.accept(f"d-{c}", "github", [req(c)])
    store.accept("d-x", "github", [req("x", branch="dev")])
    workers = Dispatcher(store, gate, workers=4)
    workers.start()
    # Same branch runs one at a time; another branch runs beside it.
    wait_for(lambda: sorted(gate.started) == ["a", "x"], what="a and x to start")
    assert workers.running == 2
    gate.release.set()
    wait_for(lambda: store.counts().get(SUCCEEDED) == 4, what="all four to finish")
    assert [c for c in gate.started if c != "x"] == ["a", "b", "c"]
    workers.stop(grace=5)
    assert {s.run_id for s in store.all()} == {"run-a", "run-b", "run-c", "run-x"}


def test_latest_wins_supersedes_queued_not_running(tmp_path: Path) -> None:
    store, gate = EventStore(tmp_path / "e.db"), Gate()
    store.accept("d-a", "github", [req("a", concurrency="latest-wins")])
    workers = Dispatcher(store, gate, workers=2)
    workers.start()
    wait_for(lambda: gate.started == ["a"], what="a to start")
    for c in ("b", "c", "d"):
        store.accept(f"d-{c}", "github", [req(c, concurrency="latest-wins")])
    workers.notify()
    wait_for(lambda: store.counts().get(SUPERSEDED) == 2, what="b and c superseded")
    gate.release.set()
    wait_for(lambda: store.counts().get(SUCCEEDED) == 2, what="a and d to finish")
    workers.stop(grace=5)
    assert gate.started == ["a", "d"]
    states = {s.request.commit: s.state for s in store.all()}
    assert states == {"a": SUCCEEDED, "b": SUPERSEDED, "c": SUPERSEDED, "d": SUCCEEDED}


def test_worker_bound(tmp_path: Path) -> None:
    store, gate = EventStore(tmp_path / "e.db"), Gate()
    for i in range(5):
        store.accept(f"d{i}", "github", [req(f"c{i}", branch=f"b{i}")])
    workers = Dispatcher(store, gate, workers=2)
    workers.start()
    wait_for(lambda: len(gate.started) == 2, what="two runs")
    assert workers.running == 2 and store.pending == 3
    gate.release.set()
    wait_for(lambda: store.counts().get(SUCCEEDED) == 5, what="all runs")
    workers.stop(grace=5)


def test_shutdown_puts_cancelled_runs_back(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "e.db")

    class Slow(Gate):
        def submit(self, item: Stored, spawned: Callable[[int], None] = lambda pid: None):
            super().submit(item)
            return SubmitResult(ok=False, exit_code=-15, interrupted=True)

    gate = Slow()
    store.accept("d", "github", [req("a")])
    workers = Dispatcher(store, gate, workers=1)
    workers.start()
    wait_for(lambda: gate.started == ["a"], what="a to start")
    workers.stop(grace=0.2)  # grace runs out -> cancel_all -> the run is interrupted
    assert [s.state for s in store.all()] == [ACCEPTED]


def test_submit_command_is_argv_not_shell() -> None:
    item = Stored(1, req("abc"), ACCEPTED, None, None, "")
    argv = command(item, "ci-1")
    assert argv[1:5] == ["-m", "taskyard.cli", "run", "ci"]
    assert argv[5:7] == ["--run-id", "ci-1"]  # chosen up front: the listener knows its folder
    # What started it, for the run's record; then the params, each a separate arg.
    r = item.request
    assert argv[7:13] == [
        "--trigger", f"source={r.source}",
        "--trigger", f"delivery={r.delivery}",
        "--trigger", f"commit={r.commit}",
    ]  # fmt: skip
    assert argv[13:] == ["-p", "repo-url=file:///r.git", "-p", "revision=abc"]


# -- cron -----------------------------------------------------------------------------------


def sched(**kw) -> Schedule:
    base = {"name": "nightly", "cron": "0 3 * * *", "repo-url": "file:///r.git"}
    return Schedule.model_validate({**base, **kw})


def test_timezone_aware_fire_times() -> None:
    berlin = sched(timezone="Europe/Berlin")
    winter = berlin.next_after(datetime(2026, 1, 10, 12, tzinfo=UTC))
    summer = berlin.next_after(datetime(2026, 7, 10, 12, tzinfo=UTC))
    assert winter.astimezone(UTC).hour == 2 and summer.astimezone(UTC).hour == 1
    # The DST night: 03:00 local is reached once, at 01:00 UTC after the switch.
    switch = berlin.next_after(datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert switch.astimezone(UTC) == datetime(2026, 3, 29, 1, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize(("policy", "fired"), [("run-once", 1), ("skip", 0)])
def test_missed_schedules_policy(tmp_path: Path, policy: str, fired: int) -> None:
    store = EventStore(tmp_path / "e.db")
    schedule = sched(missed=policy, cron="0 * * * *")
    clock = Clock(datetime(2026, 5, 1, 10, 30, tzinfo=UTC))
    first = cron.Scheduler((schedule,), store, lambda: None, clock)
    assert first.catch_up() == []  # first start ever: nothing to catch up
    clock.now += timedelta(hours=5)  # stopped across five fire times
    again = cron.Scheduler((schedule,), store, lambda: None, clock)
    got = again.catch_up()
    assert len(got) == fired
    if fired:
        assert got[0].commit == "cron:nightly@2026-05-01T15:00:00+00:00"
        assert got[0].pipeline == "retrain" and got[0].params["revision"] == "main"
    assert len(store.all()) == fired
    # A third start at the same moment fires nothing more.
    assert cron.Scheduler((schedule,), store, lambda: None, clock).catch_up() == []
    assert len(store.all()) == fired


def test_tick_fires_each_time_once(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "e.db")
    clock = Clock(datetime(2026, 5, 1, 2, 59, 59, tzinfo=UTC))
    s = cron.Scheduler((sched(),), store, lambda: None, clock)
    s.catch_up()
    assert s.tick() == []
    clock.now = datetime(2026, 5, 1, 3, 0, 0, tzinfo=UTC)
    assert [r.commit for r in s.tick()] == ["cron:nightly@2026-05-01T03:00:00+00:00"]
    assert s.tick() == []
    assert store.last_fire("nightly") == "2026-05-01T03:00:00+00:00"


def test_cron_thread_fires_for_real(tmp_path: Path) -> None:
    """A six-field (seconds) schedule on the real clock: the thread fires within ~2 s."""
    store = EventStore(tmp_path / "e.db")
    woke = threading.Event()
    s = cron.Scheduler((sched(cron="* * * * * *"),), store, woke.set)
    s.start()
    try:
        assert woke.wait(timeout=5)
    finally:
        s.stop()
    assert store.all() and store.all()[0].request.source == "cron"
