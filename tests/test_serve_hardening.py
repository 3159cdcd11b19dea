"""The listener under odd input and load, over real HTTP: malformed signed payloads, slow
clients, bursts, normalised dedup keys, unexpected errors, and one-line config errors."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from taskyard.serve.app import Listener
from taskyard.serve.client import Client, github_headers, github_push
from taskyard.serve.signatures import github_signature
from tests.serveutil import SECRET, SECRET_ENV, Records, running_listener, write_config

SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with running_listener(
        write_config(tmp_path / "serve.yaml"), tmp_path / "state", request_timeout=2.0
    ) as running:
        yield running


def _push(**changes: Any) -> dict[str, Any]:
    data = github_push("acme/model", "https://example.com/x.git", SHA)
    for key, value in changes.items():
        if key == "full_name":
            data["repository"]["full_name"] = value
        else:
            data[key] = value
    return data


def _raw(obj: Any) -> bytes:
    return obj if isinstance(obj, bytes) else json.dumps(obj).encode()


MALFORMED = {
    "after null": _push(after=None),
    "after dict": _push(after={"sha": SHA}),
    "after option": _push(after="--upload-pack=touch /tmp/pwned"),
    "after short": _push(after="abc123"),
    "after 41 hex": _push(after=SHA + "a"),
    "after not hex": _push(after="g" * 40),
    "commits added int": _push(commits=[{"added": 5}]),
    "commits added ints": _push(commits=[{"added": [5], "modified": []}]),
    "commits not list": _push(commits={"added": ["a"]}),
    "commit not object": _push(commits=[5]),
    "ref int": _push(ref=5),
    "ref null": _push(ref=None),
    "full_name int": _push(full_name=5),
    "full_name list": _push(full_name=["acme/model"]),
    "repository string": _push(repository="acme/model"),
    "deleted string": _push(deleted="false"),
    "deep arrays": b"[" * 100_000,
    "deep objects": b'{"a":' * 100_000,
    "deep inside a push": json.dumps(_push()).encode()[:-1] + b', "x": ' + b"[" * 50_000 + b"}",
    "not utf-8": b'{"ref": "\xff\xfe"}',
    "a list": b"[1, 2]",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_signed_payload_is_a_400_with_one_line(listener: Listener, name: str) -> None:
    body = _raw(MALFORMED[name])
    client = Client(listener.url)
    with Records() as logs:
        got = client.request("POST", "/hooks/github", body, github_headers(SECRET, body, "m-1"))
    assert got.status == 400, got.body
    assert got.body["error"] and "\n" not in got.body["error"]
    assert len(logs.records) == 1, logs.lines()  # exactly one line, and no traceback anywhere
    (line,) = logs.lines()
    assert "\n" not in line and json.loads(line)["status"] == 400
    assert "Traceback" not in line
    assert listener.store.all() == [] and listener.store.deliveries() == []
    # The connection was answered, not dropped: the same client goes on.
    assert client.health()["status"] == "ok"


def test_malformed_gitlab_payloads(listener: Listener) -> None:
    push = json.loads((Path(__file__).parent / "data" / "gitlab" / "push.json").read_text())
    client = Client(listener.url)
    for change in (
        {"after": None},
        {"after": "-x"},
        {"checkout_sha": 5},
        {"project": {"path_with_namespace": 5}},
        {"commits": [{"modified": "README"}]},
    ):
        got = client.gitlab(SECRET, {**push, **change}, f"g-{change}")
        assert got.status == 400, (change, got.body)
    assert listener.store.all() == []


def test_dedup_keys_are_normalised(listener: Listener) -> None:
    client = Client(listener.url)
    upper = client.github(SECRET, _push(after=SHA.upper(), full_name="Acme/Model"), "d-1")
    assert upper.status == 202 and upper.body["queued"] == 1
    lower = client.github(SECRET, _push(after=SHA, full_name="acme/model"), "d-2")
    assert lower.status == 202 and lower.body["queued"] == 0 and lower.body["duplicates"] == 1
    (row,) = listener.store.all()
    assert (row.request.repo, row.request.commit) == ("acme/model", SHA)
    assert row.request.params["revision"] == SHA


def test_unexpected_error_is_a_500_with_one_line(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise KeyError("boom\nsecond line")

    monkeypatch.setattr(listener.webhooks, "handle", broken)
    client = Client(listener.url)
    with Records() as logs:
        got = client.github(SECRET, _push(), "e-1")
    assert got.status == 500 and got.body == {"error": "internal error"}
    (line,) = logs.lines()
    assert "\n" not in line and "KeyError" in json.loads(line)["exception"]
    monkeypatch.undo()
    assert client.github(SECRET, _push(), "e-2").status == 202  # the listener is fine


def _trickle(port: int, first: bytes, drip: bytes, out: dict[str, Any]) -> None:
    """Send ``first``, then ``drip`` one byte every 0.5 s; note when the server cut us off."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    start = time.monotonic()
    got = b""
    try:
        sock.sendall(first)
        sock.settimeout(0.5)
        for byte in drip:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the server closed: EPIPE / ECONNRESET
                break
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            got += chunk
            if not chunk:
                break
        else:
            out["never cut off"] = True
    finally:
        out["seconds"] = time.monotonic() - start
        out["reply"] = got
        sock.close()


def test_trickling_clients_are_cut_off_at_the_request_deadline(listener: Listener) -> None:
    port = int(listener.url.rsplit(":", 1)[1])
    body = _raw(_push())
    head = (
        "POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: slow\r\n"
        f"X-Hub-Signature-256: {github_signature(SECRET, body)}\r\n\r\n"
    ).encode()
    in_headers: dict[str, Any] = {}
    in_body: dict[str, Any] = {}
    line = head.split(b"\r\n", 1)[0] + b"\r\n"
    threads = [  # one trickles its headers, the other its body
        threading.Thread(target=_trickle, args=(port, line, head[len(line) :], in_headers)),
        threading.Thread(target=_trickle, args=(port, head, body, in_body)),
    ]
    with Records() as logs:
        for t in threads:
            t.start()
        time.sleep(0.7)
        # Meanwhile a normal delivery is accepted at once: a slow client holds no thread.
        started = time.monotonic()
        got = Client(listener.url).github(SECRET, _push(after="a" * 40), "fast")
        assert got.status == 202 and got.body["status"] == "accepted"
        assert time.monotonic() - started < 1.0
        for t in threads:
            t.join(timeout=20)
    for out in (in_headers, in_body):
        assert "never cut off" not in out
        assert 1.5 <= out["seconds"] <= 4.5, out  # the whole-request deadline is 2 s
        assert out["reply"].startswith(b"HTTP/1.1 408 "), out["reply"]
    timeouts = [r for r in logs.records if getattr(r, "fields", {}).get("status") == 408]
    assert len(timeouts) == 2
    assert [s.request.delivery for s in listener.store.all()] == ["fast"]


def test_200_parallel_unique_deliveries_each_answered_and_stored_once(
    listener: Listener,
) -> None:
    n = 200
    gate = threading.Barrier(n)
    statuses: list[tuple[int, str]] = []
    errors: list[str] = []

    def send(i: int) -> None:
        client = Client(listener.url, timeout=30)  # its own connection
        body = _raw(_push(after=f"{i + 1:040x}", ref=f"refs/heads/release/{i}"))
        try:
            gate.wait(timeout=30)
            got = client.request(
                "POST", "/hooks/github", body, github_headers(SECRET, body, f"p-{i}")
            )
            statuses.append((got.status, got.body.get("status", "")))
        except Exception as e:  # any failure is what the test counts
            errors.append(repr(e))
        finally:
            client.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert statuses == [(202, "accepted")] * n
    rows = listener.store.all()
    assert len(rows) == n and len({r.request.commit for r in rows}) == n
    assert sorted(listener.store.deliveries()) == sorted(f"p-{i}" for i in range(n))


@pytest.mark.skipif(shutil.which("ss") is None, reason="`ss` (iproute2) not installed")
def test_listen_backlog_is_the_configured_one(listener: Listener) -> None:
    port = listener.url.rsplit(":", 1)[1]
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[2]) == 2048  # Send-Q of a listening socket is its backlog


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "repos: [{name: a/b\n  secret: {env: X}\n", "is not valid YAML"),
        ("bad.yaml", "listen:\n  port: [1, 2\n", "is not valid YAML"),
        ("bad.yaml", "listen: {port: 99999}\n", "listen.port"),
        ("bad.yaml", "repos:\n  - {name: a/b, secret: {env: X}, pipelines: [nope]}\n", "nope"),
        ("bad.toml", "workers = \n", "is not valid TOML"),
        ("missing.yaml", None, "cannot read config"),
    ],
)
def test_bad_config_is_one_error_line(
    tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    for argv in (["-m", "taskyard.cli", "serve"], ["-m", "taskyard.serve"]):
        got = subprocess.run(
            [sys.executable, *argv, "-c", str(path), "--state-dir", str(tmp_path / "s")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert got.returncode == 1, got.stderr
        lines = got.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
