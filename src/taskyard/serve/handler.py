"""Webhook handling without HTTP: (provider, headers, body) -> (status, reply).

Order matters and is the security contract: size (413) -> authenticity (401) -> JSON (400) ->
event type (202 ignored) -> payload fields (400) -> filters (202 ignored) -> store (202
accepted/duplicate). Nothing is stored for a request that fails a check, and the reply is sent
only after the store commits. Every 4xx carries ``error``: one line saying why.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from taskyard.serve import alerts
from taskyard.serve.config import ServeConfig
from taskyard.serve.events import (
    PayloadError,
    Push,
    body_delivery_id,
    ignore_reason,
    parse_github_push,
    parse_gitlab_push,
    requests_for,
)
from taskyard.serve.signatures import verify_github, verify_gitlab
from taskyard.serve.store import EventStore

log = logging.getLogger("taskyard.serve")


@dataclass
class Reply:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


class Headers:
    """Case-insensitive header lookup over a plain mapping."""

    def __init__(self, items: Any) -> None:
        self._h = {k.lower(): v for k, v in dict(items).items()}

    def get(self, name: str) -> str | None:
        return self._h.get(name.lower())


def _json_object(body: bytes) -> dict[str, Any] | Reply:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Reply(400, {"error": "body is not JSON"})
    except RecursionError:  # json's C decoder gives up past the recursion limit: fine
        return Reply(400, {"error": "JSON nested too deeply"})
    if not isinstance(data, dict):
        return Reply(400, {"error": "body is not a JSON object"})
    return data


class WebhookHandler:
    def __init__(
        self,
        config: ServeConfig,
        secrets: dict[tuple[str, str], str],
        store: EventStore,
        alert_secrets: dict[str, str] | None = None,
    ):
        self.config, self.store = config, store
        # (provider, repo name) -> secret, resolved once at start
        self.secrets = secrets
        self.alert_secrets = alert_secrets or {}

    def handle(self, provider: str, headers: Headers, body: bytes) -> Reply:
        if len(body) > self.config.listen.max_body_bytes:
            return Reply(413, {"error": "payload too large"})
        if provider == alerts.SOURCE:
            return self.alertmanager(headers, body)
        if provider == "github":
            sig = headers.get("X-Hub-Signature-256")
            signed_for = {
                name
                for (p, name), s in self.secrets.items()
                if p == "github" and verify_github(s, body, sig)
            }
            event = headers.get("X-GitHub-Event") or ""
            delivery = headers.get("X-GitHub-Delivery") or body_delivery_id(body)
            is_push = event == "push"
        else:
            token = headers.get("X-Gitlab-Token")
            signed_for = {
                name
                for (p, name), s in self.secrets.items()
                if p == "gitlab" and verify_gitlab(s, token)
            }
            event = headers.get("X-Gitlab-Event") or ""
            delivery = (
                headers.get("Idempotency-Key")
                or headers.get("X-Gitlab-Event-UUID")
                or body_delivery_id(body)
            )
            is_push = event == "Push Hook"
        if not signed_for:
            return Reply(401, {"error": "missing or invalid signature"})
        data = _json_object(body)
        if isinstance(data, Reply):
            return data
        if provider == "github" and event == "ping":
            return Reply(202, {"status": "pong"})
        if not is_push:
            return Reply(202, {"status": "ignored", "reason": f"unsupported event {event!r}"})
        try:
            push: Push = (parse_github_push if provider == "github" else parse_gitlab_push)(data)
        except (PayloadError, ValueError) as e:
            return Reply(400, {"error": str(e)})
        repo = self.config.repo(provider, push.repo)
        if repo is None:
            return Reply(202, {"status": "ignored", "reason": "repository not configured"})
        if not any(name.lower() == repo.name.lower() for name in signed_for):
            return Reply(401, {"error": "signature does not match this repository's secret"})
        reason = ignore_reason(push, repo)
        if reason:
            return Reply(202, {"status": "ignored", "reason": reason, "delivery": delivery})
        if self.store.pending >= self.config.max_pending:
            return Reply(503, {"error": "backlog full, retry later"})
        try:
            requests = requests_for(push, repo, delivery)
        except PayloadError as e:
            return Reply(400, {"error": str(e)})
        got = self.store.accept(delivery, provider, requests)
        if got.duplicate_delivery:
            return Reply(202, {"status": "duplicate", "delivery": delivery})
        return Reply(
            202,
            {
                "status": "accepted",
                "delivery": delivery,
                "commit": push.commit,
                "queued": got.queued,
                "duplicates": got.duplicates,
            },
        )

    def alertmanager(self, headers: Headers, body: bytes) -> Reply:
        """Alertmanager's webhook: auth (401) -> JSON (400) -> payload (400) -> routes (202
        ignored) -> store (202 accepted/duplicate), in the order push webhooks use."""
        am = self.config.alertmanager
        if am is None:
            return Reply(404, {"error": "no alertmanager receiver is configured"})
        if not alerts.authorized(am, self.alert_secrets, headers.get("Authorization")):
            return Reply(401, {"error": "missing or invalid credentials"})
        data = _json_object(body)
        if isinstance(data, Reply):
            return data
        try:
            parsed = alerts.parse(data)
        except PayloadError as e:
            return Reply(400, {"error": str(e)})
        delivery = alerts.delivery_id(body)
        requests, skipped = alerts.requests_for(am, parsed, delivery)
        if not requests:
            reason = "; ".join(skipped)[:500] or "no alerts"
            return Reply(202, {"status": "ignored", "reason": reason, "delivery": delivery})
        if self.store.pending >= self.config.max_pending:
            return Reply(503, {"error": "backlog full, retry later"})
        got = self.store.accept(delivery, alerts.SOURCE, requests)
        if got.duplicate_delivery:
            return Reply(202, {"status": "duplicate", "delivery": delivery})
        return Reply(
            202,
            {
                "status": "accepted",
                "delivery": delivery,
                "queued": got.queued,
                "duplicates": got.duplicates,
                "skipped": skipped,
            },
        )
