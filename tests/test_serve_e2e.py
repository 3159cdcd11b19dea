"""`taskyard serve` as a real process: a push runs the pipeline at that exact commit, and a
kill -9 in the middle of a burst loses no delivery it had answered 202."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from taskyard.render import triggers_tekton
from taskyard.serve.client import github_push
from tests.gitutil import Remote
from tests.serveutil import SECRET, SECRET_ENV, ServeProcess, wait_for, write_config


def _runs(home: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((home / "runs").glob("*/run.json"))]


@pytest.mark.slow
def test_push_runs_ci_at_that_commit(tmp_path: Path) -> None:
    remote = Remote.create(
        tmp_path / "project", {"test_ok.py": "def test_ok():\n    assert True\n"}
    )
    first = remote.head()
    sha = remote.commit({"test_more.py": "def test_more():\n    assert 2 > 1\n"}, "more")
    assert sha != first
    home = tmp_path / "home"
    config = write_config(
        tmp_path / "serve.yaml",
        repos=[
            {
                "name": "acme/project",
                "secret": {"env": SECRET_ENV},
                "url": remote.url,  # the operator says what is cloned
                "branches": ["main"],
                "pipelines": ["ci"],
                "params": {"allow-file-url": "true"},  # only reaches pipelines declaring it
            }
        ],
    )
    env = {"TASKYARD_HOME": str(home), "MLFLOW_TRACKING_URI": ""}
    with ServeProcess(config, home / "serve", env) as serve:
        client = serve.client()
        body = github_push("acme/project", remote.url, sha)
        got = client.github(SECRET, body, "push-1")
        assert got.status == 202 and got.body["queued"] == 1
        assert client.github(SECRET, body, "push-1").body["status"] == "duplicate"
        health = wait_for(
            lambda: (h := client.health())["requests"].get("succeeded") == 1 and h,
            timeout=120,
            interval=0.5,
            what="the ci run to succeed",
        )
        assert health["pending"] == 0
        assert serve.terminate() == 0  # graceful stop

    (run,) = _runs(home)
    assert run["pipeline"] == "ci" and run["status"] == "Succeeded"
    assert run["params"]["revision"] == sha and run["params"]["repo-url"] == remote.url
    assert run["results"]["commit"] == sha  # the clone checked out exactly that commit
    assert run["results"]["tests-passed"] == "2"
    # The store links the request to that run; `taskyard runs show` finds it.
    db = sqlite3.connect(home / "serve" / "events.db")
    ((state, run_id, commit),) = db.execute("SELECT state, run_id, commit_sha FROM requests")
    assert (state, run_id, commit) == ("succeeded", run["id"], sha)
    shown = subprocess.run(
        [sys.executable, "-m", "taskyard.cli", "runs", "show", run_id],
        env={**serve.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and sha in shown.stdout


@pytest.mark.slow
def test_kill_9_mid_burst_loses_no_accepted_delivery(tmp_path: Path) -> None:
    config = write_config(tmp_path / "serve.yaml", submitter="noop")
    state = tmp_path / "state"
    serve = ServeProcess(config, state, {"TASKYARD_HOME": str(tmp_path / "home")}).start()
    acked: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def burst(worker: int) -> None:
        client = serve.client()
        for i in range(10_000):
            if stop.is_set():
                return
            delivery = f"w{worker}-{i}"
            body = github_push("acme/model", "file:///r.git", commit_for(worker, i))
            try:
                got = client.github(SECRET, body, delivery)
            except OSError as e:  # the listener died under us: not acked, may be lost
                errors.append(str(e))
                return
            if got.status == 202 and got.body.get("status") == "accepted":
                acked.append(delivery)

    threads = [threading.Thread(target=burst, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 150, timeout=60, what="150 accepted deliveries")
    serve.kill()  # SIGKILL mid-burst
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert errors, "the burst was still running when the listener was killed"

    restarted = ServeProcess(config, state, {"TASKYARD_HOME": str(tmp_path / "home")}).start()
    try:
        client = restarted.client()
        stored = set(restarted_deliveries(state))
        missing = [d for d in acked if d not in stored]
        assert not missing, f"{len(missing)} acknowledged deliveries lost, e.g. {missing[:3]}"
        # Every acknowledged delivery has its request, and the restarted listener drains them.
        wait_for(lambda: client.health()["pending"] == 0, timeout=60, what="the backlog to drain")
        done = client.health()["requests"].get("succeeded", 0)
        assert done >= len(acked)
        # A redelivery of an acked one after the restart is still recognised.
        worker, i = (int(x) for x in acked[0][1:].split("-"))
        body = github_push("acme/model", "file:///r.git", commit_for(worker, i))
        again = client.github(SECRET, body, acked[0])
        assert again.body["status"] == "duplicate"
    finally:
        restarted.kill()


def commit_for(worker: int, i: int) -> str:
    return f"{worker + 1:02d}{i:038d}"  # never the all-zero "deleted" SHA


def restarted_deliveries(state: Path) -> list[str]:
    db = sqlite3.connect(state / "events.db")
    try:
        return [r[0] for r in db.execute("SELECT id FROM deliveries")]
    finally:
        db.close()


@pytest.mark.slow
def test_cronjob_script_signs_like_github(tmp_path: Path) -> None:
    """The Tekton CronJob's poster, run for real: `taskyard serve` accepts its signature."""
    config = write_config(tmp_path / "serve.yaml", submitter="noop")
    with ServeProcess(config, tmp_path / "state", {}) as serve:
        env = {
            "LISTENER_URL": serve.url + "/hooks/github",
            "PIPELINE": "retrain",
            "SCHEDULE": "nightly-retrain",
            "REPO_URL": "file:///r.git",
            "REVISION": "main",
            "WEBHOOK_SECRET_FILE": str(tmp_path / "secret"),
            "PATH": "/usr/bin:/bin",
        }
        (tmp_path / "secret").write_text(SECRET + "\n")  # as a mounted Secret key reads
        out = subprocess.run(
            [sys.executable, "-c", triggers_tekton.POST_SCHEDULE],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        # Authenticated (not 401), then ignored: the local listener runs its own cron.
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("202 ") and "taskyard-schedule" in out.stdout
        (tmp_path / "secret").write_text("wrong")
        bad = subprocess.run(
            [sys.executable, "-c", triggers_tekton.POST_SCHEDULE],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert bad.returncode != 0 and "401" in bad.stderr
