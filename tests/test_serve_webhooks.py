"""The listener's front door: signatures, payload parsing, and every reply code over real HTTP."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from taskyard.serve import config as cfg
from taskyard.serve.app import Listener
from taskyard.serve.client import Client, github_headers, github_push
from taskyard.serve.events import ignore_reason, parse_github_push, parse_gitlab_push
from taskyard.serve.signatures import github_signature, verify_github, verify_gitlab
from taskyard.serve.submit import NoopSubmitter
from tests.serveutil import SECRET, SECRET_ENV, write_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = (
    ROOT
    / "tools/webhooks-examples/node_modules/@octokit/webhooks-examples/api.github.com/index.json"
)
GITLAB = Path(__file__).parent / "data" / "gitlab"
SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"


# -- signatures -----------------------------------------------------------------------------


def test_github_published_test_vector() -> None:
    """From docs.github.com, "Validating webhook deliveries", "Testing the webhook payload
    validation"."""
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert github_signature("It's a Secret to Everybody", b"Hello, World!") == expected
    assert verify_github("It's a Secret to Everybody", b"Hello, World!", expected)
    assert not verify_github("It's a Secret to Everybody", b"Hello, World?", expected)
    assert not verify_github("another secret", b"Hello, World!", expected)
    assert not verify_github("It's a Secret to Everybody", b"Hello, World!", None)
    assert not verify_github("It's a Secret to Everybody", b"Hello, World!", expected[7:])


def test_gitlab_token() -> None:
    assert verify_gitlab("tok", "tok")
    assert not verify_gitlab("tok", "tok2")
    assert not verify_gitlab("tok", None)
    assert not verify_gitlab("", "")


# -- payloads -------------------------------------------------------------------------------


def _octokit_pushes() -> list[dict]:
    if not EXAMPLES.is_file():
        if os.environ.get("CI"):
            pytest.fail("@octokit/webhooks-examples missing in CI: `npm ci` it")
        pytest.skip("@octokit/webhooks-examples not installed: `npm ci` in tools/webhooks-examples")
    events = json.loads(EXAMPLES.read_text())
    return next(e for e in events if e["name"] == "push")["examples"]


def test_real_github_push_payloads_parse() -> None:
    pushes = _octokit_pushes()
    assert len(pushes) >= 5
    branch_pushes = 0
    for data in pushes:
        push = parse_github_push(data)
        assert push.clone_url == data["repository"]["clone_url"]
        assert push.repo == data["repository"]["full_name"]
        assert push.commit == data["after"]
        assert push.ref == data["ref"]
        assert push.deleted == data["deleted"]
        if push.branch is not None:
            branch_pushes += 1
            assert push.branch == data["ref"].removeprefix("refs/heads/")
    assert branch_pushes >= 1
    master = next(d for d in pushes if d["ref"] == "refs/heads/master")
    push = parse_github_push(master)
    assert (push.clone_url, push.commit, push.branch) == (
        "https://github.com/Codertocat/Hello-World.git",
        SHA,
        "master",
    )
    assert push.changed  # the files of its commits


def test_real_github_deletes_start_nothing() -> None:
    repo = cfg.RepoConfig(
        name="Codertocat/Hello-World", secret={"env": "X"}, branches=("*",), pipelines=("ci",)
    )
    deletes = [d for d in _octokit_pushes() if d["deleted"]]
    assert deletes, "the examples include deletes"
    for data in deletes:
        assert ignore_reason(parse_github_push(data), repo) == "branch deleted"


def test_gitlab_push_samples_parse() -> None:
    push = parse_gitlab_push(json.loads((GITLAB / "push.json").read_text()))
    assert (push.repo, push.clone_url, push.commit, push.branch, push.deleted) == (
        "mike/diaspora",
        "http://example.com/mike/diaspora.git",
        "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        "master",
        False,
    )
    assert push.changed == ("CHANGELOG", "app/controller/application.rb")
    gone = parse_gitlab_push(json.loads((GITLAB / "push-delete.json").read_text()))
    assert gone.deleted and gone.branch == "feature"


def test_branch_and_path_filters() -> None:
    repo = cfg.RepoConfig(
        name="a/b",
        secret={"env": "X"},
        branches=("main", "release/*"),
        paths=("src/*", "taskyard.toml"),
    )

    def push(ref: str, files: list[str] | None) -> str | None:
        commits = None if files is None else [{"added": files, "modified": [], "removed": []}]
        data = github_push("a/b", "u", SHA, commits=commits)
        data["ref"] = ref
        return ignore_reason(parse_github_push(data), repo)

    assert push("refs/heads/main", ["src/model/train.py"]) is None
    assert push("refs/heads/release/1.2", ["taskyard.toml"]) is None
    assert "not in the filter" in push("refs/heads/feature", ["src/x.py"])
    assert "no changed path" in push("refs/heads/main", ["README.md"])
    assert push("refs/heads/main", None) is None  # no file list: the filter cannot block
    assert "not a branch push" in push("refs/tags/v1", ["src/x.py"])


# -- config ---------------------------------------------------------------------------------


def test_config_yaml_and_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    loaded = cfg.load(write_config(tmp_path / "serve.yaml"))
    assert [r.name for r in loaded.repos] == ["acme/model", "mike/diaspora"]
    (tmp_path / "secret.txt").write_text("from-a-file\n")
    (tmp_path / "serve.toml").write_text(
        "workers = 3\n[[repos]]\nname = 'o/r'\npipelines = ['train-eval-deploy']\n"
        f"secret = {{ file = '{tmp_path / 'secret.txt'}' }}\n"
        "[[schedules]]\nname = 'nightly'\ncron = '0 3 * * *'\ntimezone = 'Europe/Berlin'\n"
        "repo-url = 'file:///srv/repo.git'\n"
    )
    toml = cfg.load(tmp_path / "serve.toml")
    assert toml.workers == 3 and toml.repos[0].secret.resolve() == "from-a-file"
    assert toml.schedules[0].pipeline == "retrain"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("repos: [{name: a/b, secret: {env: NOPE_UNSET}, pipelines: [cii]}]", "unknown pipeline"),
        ("schedules: [{name: n, cron: 'not cron', repo-url: u}]", "invalid cron"),
        ("schedules: [{name: n, cron: '* * * * *', timezone: Mars/Base, repo-url: u}]", "Mars"),
        ("repos: [{name: a/b, secret: {env: A, file: b}}]", "exactly one"),
        ("listen: {prot: 1}", "listen.prot"),
    ],
)
def test_config_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    with pytest.raises(cfg.ServeError, match=message):
        cfg.load(path)


def test_missing_secret_stops_startup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    config = cfg.load(write_config(tmp_path / "serve.yaml"))
    with pytest.raises(cfg.ServeError, match=SECRET_ENV):
        Listener(config, tmp_path / "state", NoopSubmitter())


# -- over HTTP ------------------------------------------------------------------------------


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    config = cfg.load(write_config(tmp_path / "serve.yaml"))
    config = config.model_copy(
        update={"listen": config.listen.model_copy(update={"max_body_bytes": 64 * 1024})}
    )
    running = Listener(config, tmp_path / "state", NoopSubmitter())
    running.start()
    yield running
    running.stop(grace=5)


def _stored(listener: Listener) -> list[tuple[str, str, str]]:
    return [(s.request.repo, s.request.commit, s.request.pipeline) for s in listener.store.all()]


def test_accepted_push_is_stored_before_the_reply(listener: Listener) -> None:
    client = Client(listener.url)
    got = client.github(SECRET, github_push("acme/model", "file:///r.git", SHA), "d-1")
    assert got.status == 202 and got.body["status"] == "accepted" and got.body["queued"] == 1
    # The reply came after the commit: the row is there the moment we look.
    (row,) = listener.store.all()
    assert row.request.commit == SHA and row.request.branch == "main"
    # No `url:` configured: the URL derived from the configured name on github.com, never the
    # payload's clone_url.
    assert row.request.params == {"repo-url": "https://github.com/acme/model.git", "revision": SHA}
    assert listener.store.deliveries() == ["d-1"]


def test_redelivery_and_double_push_start_one_run(listener: Listener) -> None:
    client = Client(listener.url)
    body = github_push("acme/model", "file:///r.git", SHA)
    assert client.github(SECRET, body, "d-1").body["status"] == "accepted"
    assert client.github(SECRET, body, "d-1").body["status"] == "duplicate"  # redelivery
    again = client.github(SECRET, body, "d-2")  # a second delivery of the same commit
    assert again.status == 202 and again.body["queued"] == 0 and again.body["duplicates"] == 1
    assert _stored(listener) == [("acme/model", SHA, "ci")]


def test_bad_requests_store_nothing(listener: Listener) -> None:
    client = Client(listener.url)
    body = json.dumps(github_push("acme/model", "u", SHA)).encode()
    forged = github_headers("not the secret", body, "x-1")
    assert client.request("POST", "/hooks/github", body, forged).status == 401
    unsigned = github_headers(None, body, "x-2")
    assert client.request("POST", "/hooks/github", body, unsigned).status == 401
    tampered = github_headers(SECRET, body, "x-3")
    assert client.request("POST", "/hooks/github", body + b" ", tampered).status == 401
    bad_json = b'{"ref": "refs/heads/main",'
    got = client.request("POST", "/hooks/github", bad_json, github_headers(SECRET, bad_json, "x"))
    assert got.status == 400
    not_push = b'{"zen": "hi"}'
    got = client.request("POST", "/hooks/github", not_push, github_headers(SECRET, not_push, "y"))
    assert got.status == 400  # signed, says `push`, but is no push payload
    huge = json.dumps({**github_push("acme/model", "u", SHA), "pad": "x" * 70_000}).encode()
    got = client.request("POST", "/hooks/github", huge, github_headers(SECRET, huge, "x-4"))
    assert got.status == 413
    # The connection was closed after the 413 (its body was never read); the next one works.
    assert client.health()["status"] == "ok"
    assert listener.store.all() == [] and listener.store.deliveries() == []


def test_ignored_events_reply_202_and_store_nothing(listener: Listener) -> None:
    client = Client(listener.url)
    cases = {
        "ping": client.github(SECRET, {"zen": "Design for failure.", "hook_id": 1}, "p", "ping"),
        "issues": client.github(SECRET, {"action": "opened"}, "i", "issues"),
        "delete": client.github(
            SECRET,
            github_push("acme/model", "u", "0" * 40, deleted=True, commits=[]),
            "del",
        ),
        "branch": client.github(SECRET, github_push("acme/model", "u", SHA, "feature"), "br"),
        "repo": client.github(SECRET, github_push("someone/else", "u", SHA), "other"),
    }
    assert {k: v.status for k, v in cases.items()} == dict.fromkeys(cases, 202)
    assert cases["ping"].body["status"] == "pong"
    assert cases["delete"].body["reason"] == "branch deleted"
    assert "not in the filter" in cases["branch"].body["reason"]
    assert listener.store.all() == []


def test_gitlab_deliveries(listener: Listener) -> None:
    client = Client(listener.url)
    push = json.loads((GITLAB / "push.json").read_text())
    assert client.gitlab("wrong", push, "g-0").status == 401
    assert client.gitlab(None, push, "g-0").status == 401
    got = client.gitlab(SECRET, push, "g-1")
    assert got.status == 202 and got.body["queued"] == 2  # ci + train-eval-deploy
    assert client.gitlab(SECRET, push, "g-1").body["status"] == "duplicate"
    gone = json.loads((GITLAB / "push-delete.json").read_text())
    assert client.gitlab(SECRET, gone, "g-2").body["reason"] == "branch deleted"
    assert client.gitlab(SECRET, {"object_kind": "note"}, "g-3", "Note Hook").status == 202
    sha = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    assert sorted(_stored(listener)) == [
        ("mike/diaspora", sha, "ci"),
        ("mike/diaspora", sha, "train-eval-deploy"),
    ]
    ted = next(s for s in listener.store.all() if s.request.pipeline == "train-eval-deploy")
    assert ted.request.params == {  # derived on gitlab.com, not the payload's example.com
        "repo-url": "https://gitlab.com/mike/diaspora.git",
        "revision": sha,
    }


def test_a_secret_only_signs_its_own_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv("OTHER_SECRET", "other")
    path = write_config(tmp_path / "serve.yaml")
    data = cfg.load(path).model_dump(by_alias=True)
    data["repos"] = [
        *data["repos"],
        {"name": "acme/other", "provider": "github", "secret": {"env": "OTHER_SECRET"}},
    ]
    running = Listener(cfg.ServeConfig.model_validate(data), tmp_path / "s", NoopSubmitter())
    running.start()
    try:
        client = Client(running.url)
        got = client.github("other", github_push("acme/model", "u", SHA), "cross")
        assert got.status == 401
        assert client.github("other", github_push("acme/other", "u", SHA), "own").status == 202
    finally:
        running.stop(grace=5)


def test_healthz_and_unknown_paths(listener: Listener) -> None:
    client = Client(listener.url)
    health = client.health()
    assert health["status"] == "ok" and health["pending"] == 0
    assert client.request("GET", "/nope").status == 404
    assert client.request("POST", "/webhook", b"{}", {"Content-Type": "x"}).status == 400
