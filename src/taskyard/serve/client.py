"""A tiny webhook sender: signs like GitHub/GitLab and posts over one keep-alive connection.

For tests, the load benchmark and trying a listener by hand; not used by the listener itself.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from taskyard.serve.signatures import github_signature


def github_headers(secret: str | None, body: bytes, delivery: str, event: str = "push") -> dict:
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "User-Agent": "GitHub-Hookshot/taskyard-test",
    }
    if secret is not None:
        headers["X-Hub-Signature-256"] = github_signature(secret, body)
    return headers


def gitlab_headers(token: str | None, delivery: str, event: str = "Push Hook") -> dict:
    headers = {"Content-Type": "application/json", "X-Gitlab-Event": event}
    headers["Idempotency-Key"] = delivery
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return headers


@dataclass
class Response:
    status: int
    body: dict[str, Any]
    seconds: float


class Client:
    """One HTTP/1.1 connection to the listener, reopened if the server closed it."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def request(self, method: str, path: str, body: bytes | None = None, headers=None) -> Response:
        for attempt in (0, 1):
            conn = self._connection()
            start = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
                data = resp.read()
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
                continue
            seconds = time.perf_counter() - start
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return Response(resp.status, _body(data), seconds)
        raise AssertionError("unreachable")

    def github(self, secret: str | None, payload: Any, delivery: str, event: str = "push"):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request(
            "POST", "/hooks/github", body, github_headers(secret, body, delivery, event)
        )

    def gitlab(self, token: str | None, payload: Any, delivery: str, event: str = "Push Hook"):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", "/hooks/gitlab", body, gitlab_headers(token, delivery, event))

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/healthz").body

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _body(data: bytes) -> dict[str, Any]:
    """The JSON reply; a plain-text one (uvicorn's own 400/503) as ``{"text": …}``."""
    try:
        got = json.loads(data) if data else {}
    except ValueError:
        return {"text": data.decode(errors="replace")}
    return got if isinstance(got, dict) else {"value": got}


def github_push(repo: str, clone_url: str, commit: str, branch: str = "main", **extra) -> dict:
    """A minimal GitHub push body with the fields the listener reads (tests, benchmark)."""
    return {
        "ref": f"refs/heads/{branch}",
        "before": "0" * 40,
        "after": commit,
        "created": False,
        "deleted": False,
        "repository": {"full_name": repo, "clone_url": clone_url},
        "commits": [{"id": commit, "added": [], "modified": ["README.md"], "removed": []}],
        **extra,
    }
