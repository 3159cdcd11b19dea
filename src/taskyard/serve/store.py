"""The durable event store: SQLite, written before a webhook is answered.

Why SQLite: one file, transactions, and a UNIQUE index do the deduplication for us. Accepts
commit in WAL mode with ``synchronous=FULL`` (grouped: one fsync per batch of concurrent
deliveries), so a delivery survives a ``kill -9`` of the listener and a power cut; the 202 is
sent only after that commit.

Tables:
  deliveries  one row per accepted delivery id (``X-GitHub-Delivery``, GitLab's
              ``Idempotency-Key``, ``cron:<schedule>@<time>``): a redelivery is a no-op.
  requests    one row per (repo, commit, pipeline), UNIQUE: a double push starts one run
              (repo and SHA lower-cased by the parser). state: accepted -> running ->
              succeeded | failed, or accepted -> superseded. ``run_id`` is chosen when the
              row goes to running (before the process starts) and ``pid`` is stored right
              after it started, so a restarted listener can find the run and adopt it.
              ``params`` are stored redacted: no credentials at rest.
  schedules   the last fire time of each cron schedule (for the missed-schedule policy).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from taskyard.redact import redact, redact_values
from taskyard.serve.events import RunRequest

ACCEPTED, RUNNING, SUCCEEDED, FAILED, SUPERSEDED = (
    "accepted",
    "running",
    "succeeded",
    "failed",
    "superseded",
)

SCHEMA_VERSION = 1  # PRAGMA user_version; 1: pid column, lower-case keys, redacted params
SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery TEXT NOT NULL,
    source TEXT NOT NULL,
    repo TEXT NOT NULL,
    branch TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    params TEXT NOT NULL,
    concurrency TEXT NOT NULL,
    state TEXT NOT NULL,
    run_id TEXT,
    pid INTEGER,
    exit_code INTEGER,
    detail TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (repo, commit_sha, pipeline)
);
CREATE INDEX IF NOT EXISTS requests_state ON requests (state, seq);
CREATE INDEX IF NOT EXISTS requests_key ON requests (repo, branch, pipeline, state);
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    last_fire TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Stored:
    """A request row: the request plus its bookkeeping."""

    seq: int
    request: RunRequest
    state: str
    run_id: str | None
    exit_code: int | None
    detail: str
    pid: int | None = None


@dataclass(frozen=True)
class Accept:
    duplicate_delivery: bool
    queued: int  # new request rows
    duplicates: int  # requests whose (repo, commit, pipeline) was already stored


class _Job:
    """One accept waiting for the group commit that makes it durable."""

    __slots__ = ("delivery", "done", "error", "requests", "result", "schedule", "source")

    def __init__(self, delivery, source, requests, schedule) -> None:  # type: ignore[no-untyped-def]
        self.delivery, self.source, self.requests, self.schedule = (
            delivery,
            source,
            requests,
            schedule,
        )
        self.done = threading.Event()
        self.result: Accept | None = None
        self.error: BaseException | None = None


class EventStore:
    """Thread-safe (one connection behind a lock: SQLite has one writer anyway).

    Accepts go through a group commit: a writer thread takes every accept waiting at that
    moment, writes them in ONE transaction with ``synchronous=FULL`` (one fsync for the lot),
    then wakes each caller. Bookkeeping writes (state changes) commit with ``NORMAL``: losing
    one to a power cut only means a run is started again (at-least-once), never a lost event.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._pending = self._count(ACCEPTED)
        self._jobs: list[_Job] = []
        self._jobs_ready = threading.Condition()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()

    def _migrate(self) -> None:
        """Bring a store made by an older listener up to date (idempotent, at open)."""
        db = self._db
        if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        columns = {r[1] for r in db.execute("PRAGMA table_info(requests)")}
        db.execute("PRAGMA secure_delete=ON")  # overwritten plaintext must not linger in pages
        db.execute("BEGIN IMMEDIATE")
        try:
            if "pid" not in columns:
                db.execute("ALTER TABLE requests ADD COLUMN pid INTEGER")
            # Older listeners stored keys as sent and params (credentials included) in clear.
            db.execute(
                "UPDATE OR IGNORE requests SET repo = lower(repo), commit_sha = lower(commit_sha)"
                " WHERE source != 'cron'"
            )
            for seq, repo, params in db.execute(
                "SELECT seq, repo, params FROM requests"
            ).fetchall():
                clean = json.dumps(redact_values(json.loads(params)), sort_keys=True)
                if clean != params or redact(repo) != repo:
                    db.execute(
                        "UPDATE OR IGNORE requests SET params = ?, repo = ? WHERE seq = ?",
                        (clean, redact(repo), seq),
                    )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.execute("PRAGMA secure_delete=OFF")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._jobs_ready:
            self._closed = True
            self._jobs_ready.notify()
        self._writer.join(timeout=10)
        with self._lock:
            self._db.close()

    def _count(self, state: str) -> int:
        row = self._db.execute("SELECT count(*) FROM requests WHERE state = ?", (state,))
        return int(row.fetchone()[0])

    @property
    def pending(self) -> int:
        return self._pending

    def accept(
        self,
        delivery: str,
        source: str,
        requests: list[RunRequest],
        schedule: tuple[str, str] | None = None,
    ) -> Accept:
        """Store a delivery and its requests; returns once they are committed (fsync'd)."""
        job = _Job(delivery, source, requests, schedule)
        with self._jobs_ready:
            if self._closed:
                raise RuntimeError("event store is closed")
            self._jobs.append(job)
            self._jobs_ready.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _write_loop(self) -> None:
        while True:
            with self._jobs_ready:
                while not self._jobs and not self._closed:
                    self._jobs_ready.wait()
                batch, self._jobs = self._jobs, []
                if not batch and self._closed:
                    return
            try:
                self._commit(batch)
            except BaseException:
                # One bad job must not fail its neighbours: retry them one by one.
                for job in batch:
                    try:
                        self._commit([job])
                    except BaseException as e:
                        job.error = e
                        job.done.set()

    def _commit(self, batch: list[_Job]) -> None:
        now = time.time()
        results: list[Accept] = []
        with self._lock:
            db = self._db
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            try:
                for job in batch:
                    results.append(self._insert(job, now))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                db.execute("PRAGMA synchronous=NORMAL")
            self._pending += sum(r.queued for r in results)
        for job, result in zip(batch, results, strict=True):
            job.result = result
            job.done.set()

    def _insert(self, job: _Job, now: float) -> Accept:
        db = self._db
        cur = db.execute(
            "INSERT OR IGNORE INTO deliveries (id, source, received) VALUES (?, ?, ?)",
            (job.delivery, job.source, now),
        )
        if cur.rowcount == 0:
            return Accept(True, 0, 0)
        queued = 0
        for r in job.requests:
            cur = db.execute(
                "INSERT OR IGNORE INTO requests (delivery, source, repo, branch,"
                " commit_sha, pipeline, params, concurrency, state, created, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r.delivery,
                    r.source,
                    r.repo,
                    r.branch,
                    r.commit,
                    r.pipeline,
                    json.dumps(r.params, sort_keys=True),
                    r.concurrency,
                    ACCEPTED,
                    now,
                    now,
                ),
            )
            queued += cur.rowcount
        if job.schedule is not None:
            db.execute(
                "INSERT INTO schedules (name, last_fire) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET last_fire = excluded.last_fire",
                job.schedule,
            )
        return Accept(False, queued, len(job.requests) - queued)

    def in_flight(self) -> list[Stored]:
        """Rows left ``running`` (by a listener that died, or by this one before a restart)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM requests WHERE state = ? ORDER BY seq", (RUNNING,)
            ).fetchall()
        return [_row(r) for r in rows]

    def requeue(self, seqs: list[int], detail: str = "") -> int:
        """Running rows whose run is known to be lost go back to the queue (at-least-once)."""
        if not seqs:
            return 0
        with self._lock:
            cur = self._db.execute(
                "UPDATE requests SET state = ?, pid = NULL, detail = ?, updated = ?"
                f" WHERE state = ? AND seq IN ({','.join('?' * len(seqs))})",
                (ACCEPTED, detail, time.time(), RUNNING, *seqs),
            )
            self._pending += cur.rowcount
            return cur.rowcount

    def queued(self, limit: int = -1) -> list[Stored]:
        """Accepted, not yet started requests, oldest first (``limit`` -1: all)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM requests WHERE state = ? ORDER BY seq LIMIT ?",
                (ACCEPTED, limit),
            ).fetchall()
        return [_row(r) for r in rows]

    def supersede(self) -> list[Stored]:
        """``latest-wins``: queued requests with a newer queued one for the same (repo, branch,
        pipeline) become ``superseded``. Returns them."""
        newer = (
            "state = ? AND concurrency = 'latest-wins' AND EXISTS (SELECT 1 FROM requests n"
            " WHERE n.state = ? AND n.repo = requests.repo AND n.branch = requests.branch"
            " AND n.pipeline = requests.pipeline AND n.seq > requests.seq)"
        )
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM requests WHERE {newer}", (ACCEPTED, ACCEPTED)
            ).fetchall()
            if rows:
                self._db.execute(
                    "UPDATE requests SET state = ?, detail = ?, updated = ?"
                    f" WHERE seq IN ({','.join('?' * len(rows))})",
                    (SUPERSEDED, "a newer push was queued", time.time(), *(r[0] for r in rows)),
                )
                self._pending -= len(rows)
        return [_row(r) for r in rows]

    def all(self) -> list[Stored]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLS} FROM requests ORDER BY seq").fetchall()
        return [_row(r) for r in rows]

    def deliveries(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM deliveries ORDER BY rowid")]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, count(*) FROM requests GROUP BY state")
            return {state: n for state, n in rows}

    def transition(
        self,
        seq: int,
        state: str,
        *,
        run_id: str | None = None,
        exit_code: int | None = None,
        detail: str = "",
    ) -> None:
        with self._lock:
            before = self._db.execute("SELECT state FROM requests WHERE seq = ?", (seq,))
            old = before.fetchone()[0]
            self._db.execute(
                "UPDATE requests SET state = ?, run_id = coalesce(?, run_id),"
                " exit_code = coalesce(?, exit_code), detail = ?, updated = ? WHERE seq = ?",
                (state, run_id, exit_code, redact(detail), time.time(), seq),
            )
            self._pending += (state == ACCEPTED) - (old == ACCEPTED)

    def mark_running(self, starts: dict[int, str | None]) -> None:
        """Accepted -> running for a batch, each with the run id it will get, in one
        transaction: committed before any process starts, so a crash right after leaves a
        row that names its run."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "UPDATE requests SET state = ?, run_id = ?, pid = NULL, exit_code = NULL,"
                    " detail = '', updated = ? WHERE seq = ? AND state = ?",
                    [(RUNNING, run_id, now, seq, ACCEPTED) for seq, run_id in starts.items()],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._pending -= len(starts)

    def set_pid(self, seq: int, pid: int) -> None:
        """Right after the run's process started (the row already names its run id)."""
        with self._lock:
            self._db.execute(
                "UPDATE requests SET pid = ?, updated = ? WHERE seq = ?", (pid, time.time(), seq)
            )

    def last_fire(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT last_fire FROM schedules WHERE name = ?", (name,))
            got = row.fetchone()
        return got[0] if got else None

    def set_last_fire(self, name: str, when: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO schedules (name, last_fire) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET last_fire = excluded.last_fire",
                (name, when),
            )


_COLS = (
    "seq, delivery, source, repo, branch, commit_sha, pipeline, params, concurrency, state,"
    " run_id, exit_code, detail, pid"
)


def _row(r: tuple) -> Stored:
    req = RunRequest(
        delivery=r[1],
        source=r[2],
        repo=r[3],
        branch=r[4],
        commit=r[5],
        pipeline=r[6],
        params=json.loads(r[7]),
        concurrency=r[8],
    )
    return Stored(
        seq=r[0], request=req, state=r[9], run_id=r[10], exit_code=r[11], detail=r[12], pid=r[13]
    )
