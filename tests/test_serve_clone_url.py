"""The operator decides what is cloned, and credentials in its config stay out of the store
and the logs: real listener, real `taskyard run`, real git remotes (file:// and smart HTTP)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from taskyard.serve import config as cfg
from taskyard.serve import cron
from taskyard.serve.app import Listener
from taskyard.serve.client import Client, github_push
from taskyard.serve.events import run_params
from taskyard.serve.store import Stored
from taskyard.serve.submit import CliSubmitter, SubmitResult, Submitter
from tests.gitutil import GitHttpServer, Remote
from tests.serveutil import SECRET, SECRET_ENV, Records, running_listener, wait_for, write_config

SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
PAYLOAD_URL = "https://evil.example.com/other.git"


class Recorder(Submitter):
    """Keeps the params each run is submitted with (what `taskyard run` would get)."""

    def __init__(self) -> None:
        self.params: list[dict[str, str]] = []
        self.done = threading.Event()

    def submit(self, item: Stored, spawned: Any) -> SubmitResult:
        self.params.append(dict(item.request.params))
        self.done.set()
        return SubmitResult(ok=True)


def _repo(**extra: Any) -> dict[str, Any]:
    return {"name": "acme/model", "secret": {"env": SECRET_ENV}, "pipelines": ["ci"], **extra}


def _accept(tmp_path: Path, repo: dict[str, Any], payload: dict) -> tuple[Any, list[dict]]:
    """One push through a real listener; the stored params and the submitted ones."""
    recorder = Recorder()
    config = write_config(tmp_path / "serve.yaml", repos=[repo])
    with running_listener(config, tmp_path / "state", recorder) as listener:
        got = Client(listener.url).github(SECRET, payload, "d-1")
        if got.status == 202:
            assert recorder.done.wait(10)
        stored = [s.request.params for s in listener.store.all()]
    return got, [stored, recorder.params]


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.mark.parametrize(
    ("extra", "cloned"),
    [
        (
            {"url": "https://git.example.com/acme/model.git"},
            "https://git.example.com/acme/model.git",
        ),
        ({}, "https://github.com/acme/model.git"),  # derived from the configured name
        ({"host": "https://ghe.example.com/"}, "https://ghe.example.com/acme/model.git"),
    ],
)
def test_default_clones_what_the_operator_configured(
    tmp_path: Path, extra: dict, cloned: str
) -> None:
    payload = github_push("Acme/Model", PAYLOAD_URL, SHA)  # the payload names another URL
    got, (stored, submitted) = _accept(tmp_path, _repo(**extra), payload)
    assert got.status == 202 and got.body["status"] == "accepted"
    assert stored == [{"repo-url": cloned, "revision": SHA}]
    assert submitted == [{"repo-url": cloned, "revision": SHA}]


def test_gitlab_default_host() -> None:
    repo = cfg.RepoConfig(name="group/sub/project", provider="gitlab", secret={"env": "X"})
    assert repo.clone_url() == "https://gitlab.com/group/sub/project.git"


def test_payload_url_is_an_explicit_opt_in(tmp_path: Path) -> None:
    payload = github_push("acme/model", PAYLOAD_URL, SHA)
    repo = _repo(url="https://git.example.com/acme/model.git", **{"clone-url-from-payload": True})
    got, (stored, submitted) = _accept(tmp_path, repo, payload)
    assert got.status == 202
    assert stored == submitted == [{"repo-url": PAYLOAD_URL, "revision": SHA}]


@pytest.mark.parametrize(
    "url",
    ["ext::sh -c touch% /tmp/pwned", "-uhelp", "file:///etc/other.git", "fd::3", None, 5, ""],
)
def test_opt_in_still_refuses_odd_payload_urls(tmp_path: Path, url: Any) -> None:
    payload = github_push("acme/model", "x", SHA)
    payload["repository"]["clone_url"] = url
    got, (stored, _) = _accept(tmp_path, _repo(**{"clone-url-from-payload": True}), payload)
    assert got.status == 400 and "\n" not in got.body["error"]
    assert stored == []


@pytest.mark.slow
def test_a_push_naming_another_repository_clones_the_configured_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real runs: the payload points at an unrelated local repository whose tests fail; the
    default config still clones (and tests) the configured one."""
    ours = Remote.create(tmp_path / "ours", {"test_ok.py": "def test_ok():\n    assert True\n"})
    theirs = Remote.create(tmp_path / "theirs", {"test_bad.py": "def test_b():\n    assert 0\n"})
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    config = write_config(
        tmp_path / "serve.yaml",
        repos=[_repo(url=ours.url, params={"allow-file-url": "true"})],
    )
    state = tmp_path / "state"
    with running_listener(config, state, CliSubmitter(state / "logs")) as listener:
        client = Client(listener.url)
        got = client.github(SECRET, github_push("acme/model", theirs.url, ours.head()), "d-1")
        assert got.status == 202 and got.body["queued"] == 1
        wait_for(
            lambda: listener.store.counts().get("succeeded") == 1,
            timeout=120,
            interval=0.2,
            what="the ci run of the configured repository to succeed",
        )
        (row,) = listener.store.all()
    run = json.loads((tmp_path / "home" / "runs" / row.run_id / "run.json").read_text())
    assert run["params"]["repo-url"] == ours.url != theirs.url
    assert run["results"]["commit"] == ours.head() and run["results"]["tests-passed"] == "1"


@pytest.mark.slow
def test_clone_credentials_are_in_no_state_file_and_no_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret"
    remote = Remote.create(tmp_path / "git" / "project", {"test_ok.py": "def test_ok(): pass\n"})
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    state = tmp_path / "state"
    with GitHttpServer(tmp_path / "git", user="user", password=secret) as http:
        url = http.url(remote.bare).replace("http://", f"http://user:{secret}@")
        config = write_config(tmp_path / "serve.yaml", repos=[_repo(url=url)])
        with (
            Records() as logs,
            running_listener(config, state, CliSubmitter(state / "logs")) as listener,
        ):
            got = Client(listener.url).github(
                SECRET, github_push("acme/model", "x", remote.head()), "d-1"
            )
            assert got.status == 202
            wait_for(
                lambda: set(listener.store.counts()) == {"succeeded"},
                timeout=120,
                interval=0.2,
                what="the run to finish",
            )
            (row,) = listener.store.all()
            assert row.request.params["repo-url"] == url.replace(f"user:{secret}@", "***@")
    # The run did get the credentials: it cloned the protected repository at that commit.
    run = json.loads((tmp_path / "home" / "runs" / row.run_id / "run.json").read_text())
    assert run["results"]["commit"] == remote.head()
    files = [p for p in [*state.rglob("*"), *(tmp_path / "home").rglob("*")] if p.is_file()]
    assert {p.name for p in files} >= {"events.db", f"{row.seq}.log"}
    leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
    assert not leaked, leaked
    lines = logs.lines()
    assert any('"webhook"' in line for line in lines)
    assert not [line for line in lines if secret in line]


def test_schedules_store_redacted_and_run_with_the_configured_url(tmp_path: Path) -> None:
    schedule = cfg.Schedule.model_validate(
        {"name": "nightly", "cron": "0 3 * * *", "repo-url": "https://u:s3cret@h.example/r.git"}
    )
    req = cron.request_for(schedule, datetime(2026, 5, 1, 3, tzinfo=UTC))
    assert "s3cret" not in req.model_dump_json()
    config = cfg.ServeConfig(schedules=(schedule,))
    assert run_params(config, req)["repo-url"] == "https://u:s3cret@h.example/r.git"
    gone = cfg.ServeConfig()
    with pytest.raises(LookupError, match="no longer configured"):
        run_params(gone, req)


def test_listener_resolves_params_from_its_config(tmp_path: Path) -> None:
    """The dispatcher of a real Listener re-derives params at submit time."""
    recorder = Recorder()
    config = cfg.load(
        write_config(
            tmp_path / "serve.yaml",
            repos=[
                _repo(url="https://tok:s3cret@git.example.com/a.git", params={"pytest-args": "-q"})
            ],
        )
    )
    listener = Listener(config, tmp_path / "state", recorder)
    listener.start()
    try:
        got = Client(listener.url).github(SECRET, github_push("acme/model", "x", SHA), "d")
        assert got.status == 202 and recorder.done.wait(10)
    finally:
        listener.stop(grace=5)
    assert recorder.params == [
        {
            "pytest-args": "-q",
            "repo-url": "https://tok:s3cret@git.example.com/a.git",
            "revision": SHA,
        }
    ]
    assert b"s3cret" not in (tmp_path / "state" / "events.db").read_bytes()
