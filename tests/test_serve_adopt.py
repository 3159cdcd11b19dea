"""A listener that dies while runs are in flight: on restart nothing runs twice.

Real ``taskyard run`` processes throughout (a tiny pipeline file that waits for a release
file), a real ``taskyard serve`` process killed with SIGKILL, and a real ``ci`` run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from taskyard.serve.client import github_push
from taskyard.serve.dispatch import Dispatcher
from taskyard.serve.events import RunRequest
from taskyard.serve.store import ACCEPTED, FAILED, RUNNING, SUCCEEDED, EventStore, Stored
from taskyard.serve.submit import CliSubmitter, command, find_process
from tests.gitutil import Remote
from tests.serveutil import SECRET, SECRET_ENV, ServeProcess, wait_for, write_config

# A pipeline file for `taskyard run FILE:WAITER`: its one step notes each start in MARK and
# waits until RELEASE exists, then exits with EXIT.
PIPELINE = """
from taskyard.spec import Param, PipelineSpec, PipelineTask, TaskSpec, param

PARAMS = (Param(name="mark"), Param(name="release"), Param(name="exit-code", default="0"))
WAIT = TaskSpec(
    name="wait",
    display_name="wait",
    description="Notes its start, waits for a release file.",
    image="python:3.11-slim",
    command=(
        "python",
        "-c",
        "import os, sys, time\\n"
        "open(sys.argv[1], 'a').write('started\\\\n')\\n"
        "while not os.path.exists(sys.argv[2]):\\n"
        "    time.sleep(0.05)\\n"
        "sys.exit(int(sys.argv[3]))\\n",
    ),
    args=("$(params.mark)", "$(params.release)", "$(params.exit-code)"),
    params=PARAMS,
)
WAITER = PipelineSpec(
    name="waiter",
    display_name="waiter",
    description="One waiting step.",
    params=PARAMS,
    tasks=(
        PipelineTask(
            name="wait",
            task=WAIT,
            params={p.name: param(p.name) for p in PARAMS},
        ),
    ),
)
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    return tmp_path / "home"


def _runs(home: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (home / "runs").glob("*/run.json")}


class Case:
    """One request of the waiter pipeline, with its marker and release files."""

    def __init__(self, tmp: Path, pipeline: str, name: str, exit_code: int = 0) -> None:
        self.name = name
        self.mark, self.release = tmp / f"{name}.mark", tmp / f"{name}.release"
        self.request = RunRequest(
            source="github",
            delivery=f"d-{name}",
            repo="acme/model",
            branch=name,
            commit=hashlib.sha1(name.encode()).hexdigest(),
            pipeline=pipeline,
            params={
                "mark": str(self.mark),
                "release": str(self.release),
                "exit-code": str(exit_code),
            },
        )

    def starts(self) -> int:
        return self.mark.read_text().count("started") if self.mark.exists() else 0


def _start(store: EventStore, case: Case, run_id: str, logs: Path) -> subprocess.Popen:
    """What a listener does to start a run (row -> running with its id; Popen; pid)."""
    (seq,) = [s.seq for s in store.all() if s.request.delivery == case.request.delivery]
    store.mark_running({seq: run_id})
    logs.mkdir(parents=True, exist_ok=True)
    item = Stored(seq, case.request, RUNNING, run_id, None, "")
    with (logs / f"{seq}.log").open("ab") as out:
        proc = subprocess.Popen(
            command(item, run_id), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    store.set_pid(seq, proc.pid)
    return proc


def _status(home: Path, run_id: str) -> str | None:
    try:
        return json.loads((home / "runs" / run_id / "run.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def test_restart_adopts_live_runs_records_finished_ones_requeues_lost_ones(
    tmp_path: Path, home: Path
) -> None:
    (tmp_path / "pipe.py").write_text(PIPELINE)
    pipeline = f"{tmp_path / 'pipe.py'}:WAITER"
    live, done = Case(tmp_path, pipeline, "live"), Case(tmp_path, pipeline, "done")
    failed = Case(tmp_path, pipeline, "failed-run", exit_code=3)
    rebooted, never = Case(tmp_path, pipeline, "rebooted"), Case(tmp_path, pipeline, "never")
    cases = (live, done, failed, rebooted, never)
    store = EventStore(tmp_path / "state" / "events.db")
    for case in cases:
        store.accept(case.request.delivery, "github", [case.request])
    logs = tmp_path / "state" / "logs"
    procs: list[subprocess.Popen] = []
    try:
        # The "previous listener": four runs started, then it died.
        done.release.touch()
        failed.release.touch()
        procs = [
            _start(store, live, "waiter-live", logs),
            _start(store, done, "waiter-done", logs),
            _start(store, failed, "waiter-failed", logs),
            _start(store, rebooted, "waiter-rebooted", logs),
        ]
        for proc in procs[1:3]:
            proc.wait(timeout=60)
        wait_for(lambda: _status(home, "waiter-rebooted") == "Running" and rebooted.starts())
        os.killpg(procs[3].pid, signal.SIGKILL)  # like a reboot: run.json stays "Running"
        procs[3].wait(timeout=10)
        (seq_never,) = [s.seq for s in store.all() if s.request.branch == "never"]
        store.mark_running({seq_never: "waiter-never"})  # died before starting it
        wait_for(lambda: live.starts() == 1, what="the live run's step")

        # The restart.
        submitter = CliSubmitter(logs)
        dispatcher = Dispatcher(store, submitter, workers=4)
        settled = dispatcher.start()
        try:
            assert settled == {"adopt": 1, "record": 2, "requeue": 2}
            rows = {s.request.branch: s for s in store.all()}
            assert rows["done"].state == SUCCEEDED and rows["done"].run_id == "waiter-done"
            assert rows["failed-run"].state == FAILED
            assert rows["failed-run"].run_id == "waiter-failed"
            assert rows["live"].state == RUNNING and rows["live"].run_id == "waiter-live"
            # The lost ones run again (at-least-once), each as a new run.
            rebooted.release.touch()
            never.release.touch()
            wait_for(
                lambda: (
                    {s.request.branch: s.state for s in store.all()}
                    == {
                        "live": RUNNING,
                        "done": SUCCEEDED,
                        "failed-run": FAILED,
                        "rebooted": SUCCEEDED,
                        "never": SUCCEEDED,
                    }
                ),
                timeout=60,
                what="the re-queued runs",
            )
            assert dispatcher.running == 1  # the adopted run holds a worker
            live.release.touch()
            wait_for(
                lambda: store.counts() == {SUCCEEDED: 4, FAILED: 1},
                timeout=60,
                what="the adopted run to finish",
            )
        finally:
            dispatcher.stop(grace=10)
        rows = {s.request.branch: s for s in store.all()}
        assert rows["live"].run_id == "waiter-live"
        assert live.starts() == 1 and done.starts() == 1  # nothing ran twice
        assert rows["rebooted"].run_id not in (None, "waiter-rebooted")
        assert rows["never"].run_id not in (None, "waiter-never")
        runs = _runs(home)
        assert runs["waiter-live"]["status"] == "Succeeded"
        assert len([r for r in runs.values() if r["params"]["mark"] == str(live.mark)]) == 1
    finally:
        for case in cases:
            case.release.touch()  # any leftover step exits
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        store.close()


def test_shutdown_stops_an_adopted_run(tmp_path: Path, home: Path) -> None:
    (tmp_path / "pipe.py").write_text(PIPELINE)
    case = Case(tmp_path, f"{tmp_path / 'pipe.py'}:WAITER", "adopted")
    store = EventStore(tmp_path / "events.db")
    store.accept(case.request.delivery, "github", [case.request])
    proc = _start(store, case, "waiter-adopted", tmp_path / "logs")
    try:
        wait_for(lambda: case.starts() == 1, what="the step")
        dispatcher = Dispatcher(store, CliSubmitter(tmp_path / "logs"), workers=1)
        assert dispatcher.start()["adopt"] == 1
        assert find_process("waiter-adopted") == proc.pid
        dispatcher.stop(grace=0.2)  # grace runs out: the adopted run's group is stopped
        proc.wait(timeout=10)  # reaped by us here: it is our child in this test
        assert find_process("waiter-adopted") is None
        (row,) = store.all()
        assert row.state == ACCEPTED  # interrupted by shutdown: runs again after a restart
        assert _status(home, "waiter-adopted") == "Cancelled"
    finally:
        case.release.touch()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        store.close()


def test_old_store_is_migrated(tmp_path: Path) -> None:
    """A store written by the previous listener: no pid column, keys as sent, params with
    credentials in clear."""
    path = tmp_path / "events.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE deliveries (id TEXT PRIMARY KEY, source TEXT NOT NULL, received REAL NOT NULL);
        CREATE TABLE requests (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, delivery TEXT NOT NULL, source TEXT NOT NULL,
            repo TEXT NOT NULL, branch TEXT NOT NULL, commit_sha TEXT NOT NULL,
            pipeline TEXT NOT NULL, params TEXT NOT NULL, concurrency TEXT NOT NULL,
            state TEXT NOT NULL, run_id TEXT, exit_code INTEGER,
            detail TEXT NOT NULL DEFAULT '', created REAL NOT NULL, updated REAL NOT NULL,
            UNIQUE (repo, commit_sha, pipeline));
        """
    )
    params = json.dumps({"repo-url": "https://u:s3cret@h.example/r.git", "revision": "ABC"})
    db.execute(
        "INSERT INTO requests (delivery, source, repo, branch, commit_sha, pipeline, params,"
        " concurrency, state, created, updated) VALUES"
        " ('d', 'github', 'Acme/Model', 'main', 'ABC', 'ci', ?, 'queue', 'accepted', 0, 0)",
        (params,),
    )
    db.commit()
    db.close()
    store = EventStore(path)
    try:
        (row,) = store.all()
        assert (row.request.repo, row.request.commit, row.pid) == ("acme/model", "abc", None)
        assert row.request.params["repo-url"] == "https://***@h.example/r.git"
        store.mark_running({row.seq: "ci-1"})
        store.set_pid(row.seq, 4242)
        (row,) = store.in_flight()
        assert (row.run_id, row.pid) == ("ci-1", 4242)
    finally:
        store.close()
    for file in tmp_path.iterdir():
        assert b"s3cret" not in file.read_bytes(), file


# A ci run whose test waits for a release file: the listener is killed while it waits.
WAITING_TEST = """import os, pathlib, time

def test_waits():
    with open({mark!r}, "a") as f:
        f.write("started\\n")
    deadline = time.time() + 120
    while not os.path.exists({release!r}):
        assert time.time() < deadline
        time.sleep(0.05)
"""


@pytest.mark.slow
def test_listener_killed_mid_run_adopts_it_on_restart(tmp_path: Path) -> None:
    mark, release = tmp_path / "mark", tmp_path / "release"
    remote = Remote.create(
        tmp_path / "project",
        {"test_wait.py": WAITING_TEST.format(mark=str(mark), release=str(release))},
    )
    sha = remote.head()
    home = tmp_path / "home"
    config = write_config(
        tmp_path / "serve.yaml",
        repos=[
            {
                "name": "acme/project",
                "secret": {"env": SECRET_ENV},
                "url": remote.url,
                "pipelines": ["ci"],
                "params": {"allow-file-url": "true"},
            }
        ],
    )
    state = tmp_path / "state"
    env = {"TASKYARD_HOME": str(home), "MLFLOW_TRACKING_URI": ""}
    first = ServeProcess(config, state, env).start()
    second: ServeProcess | None = None
    pid = None
    try:
        got = first.client().github(SECRET, github_push("acme/project", "x", sha), "push-1")
        assert got.status == 202 and got.body["queued"] == 1
        wait_for(lambda: mark.exists(), timeout=120, interval=0.1, what="the test to start")
        db = sqlite3.connect(state / "events.db")
        ((state_before, run_id, pid),) = db.execute("SELECT state, run_id, pid FROM requests")
        db.close()
        assert state_before == "running" and run_id and pid
        assert find_process(run_id, pid) == pid

        first.kill()  # SIGKILL the listener's group; the run has its own session
        assert find_process(run_id, pid) == pid, "the run outlived its listener"

        second = ServeProcess(config, state, env).start()
        client = second.client()
        health = client.health()
        assert health["running"] == 1 and health["requests"] == {"running": 1}
        release.touch()
        wait_for(
            lambda: client.health()["requests"] == {"succeeded": 1},
            timeout=120,
            interval=0.2,
            what="the adopted run to be recorded",
        )
        assert second.terminate() == 0
    finally:
        release.touch()
        for serve in (first, second):
            if serve is not None:
                serve.kill()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    runs = _runs(home)
    assert list(runs) == [run_id], runs.keys()  # exactly one run of that delivery
    assert runs[run_id]["status"] == "Succeeded" and runs[run_id]["results"]["commit"] == sha
    assert mark.read_text().count("started") == 1  # its test ran once
    db = sqlite3.connect(state / "events.db")
    rows = db.execute("SELECT state, run_id FROM requests").fetchall()
    db.close()
    assert rows == [("succeeded", run_id)]
    log = (state.parent / f"{state.name}-serve.log").read_text()
    assert '"run adopted"' in log


def test_submit_starts_the_run_under_the_id_it_was_given(tmp_path: Path, home: Path) -> None:
    (tmp_path / "pipe.py").write_text(PIPELINE)
    case = Case(tmp_path, f"{tmp_path / 'pipe.py'}:WAITER", "given")
    case.release.touch()
    submitter = CliSubmitter(tmp_path / "logs")
    item = Stored(7, case.request, RUNNING, None, None, "")
    run_id = submitter.new_run_id(item)
    assert run_id.startswith("waiter-")
    pids: list[int] = []
    result = submitter.submit(
        Stored(7, case.request, RUNNING, run_id, None, ""), spawned=pids.append
    )
    assert result.ok and result.run_id == run_id and result.exit_code == 0
    assert len(pids) == 1
    assert list(_runs(home)) == [run_id]
