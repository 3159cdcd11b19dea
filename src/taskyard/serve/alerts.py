"""Alertmanager's webhook -> the ``RunRequest``s its firing alerts ask for.

The payload is Alertmanager's webhook format, version 4 (docs: prometheus.io/docs/alerting/
latest/configuration/#webhook_config; source: alertmanager notify/webhook/webhook.go
``Message``): ``{"version": "4", "status", "receiver", "groupKey", "alerts": [{"status",
"labels", "annotations", "startsAt", "endsAt", "fingerprint", …}], …}``.

One run per **alert instance**, not per notification: Alertmanager re-sends a still-firing
alert every ``repeat_interval`` and retries a failed POST, so the request's key is the
alert's ``fingerprint`` and ``startsAt`` (one firing episode) and the store's UNIQUE index
turns every re-send into a duplicate. Resolved alerts start nothing.

Pure functions, no I/O; the handler authenticates first (:func:`authorized`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

from taskyard.redact import redact, redact_values
from taskyard.serve.config import LABEL_REF, AlertmanagerConfig, AlertRoute
from taskyard.serve.events import NotConfigured, PayloadError, RunRequest, pipeline_params

SOURCE = "alertmanager"
# A label value a param may carry: what instance/model/namespace labels look like, nothing a
# flag parser or a URL could be tricked with (no spaces, quotes, '?', '#', leading '-').
SAFE_LABEL = re.compile(r"[A-Za-z0-9_.:/@][A-Za-z0-9_.:/@-]{0,255}")
MAX_ALERTS = 1000


def authorized(config: AlertmanagerConfig, secrets: dict[str, str], header: str | None) -> bool:
    """The ``Authorization`` header against the configured bearer token or basic credentials,
    in constant time."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if config.bearer_token is not None:
        if scheme.lower() != "bearer":
            return False
        want = secrets["bearer"]
        return bool(want) and hmac.compare_digest(want.encode(), value.strip().encode())
    assert config.basic_auth is not None
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    ok_user = hmac.compare_digest(config.basic_auth.username.encode(), user.encode())
    ok_pass = hmac.compare_digest(secrets["password"].encode(), password.encode())
    return bool(sep) and ok_user and ok_pass


def resolve_secrets(config: AlertmanagerConfig) -> dict[str, str]:
    """Read the credentials once at start (a missing one fails ``taskyard serve`` at once)."""
    if config.bearer_token is not None:
        return {"bearer": config.bearer_token.resolve()}
    assert config.basic_auth is not None
    return {"password": config.basic_auth.password.resolve()}


def _str_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise PayloadError(f"{where} must be an object of strings")
    return value


def parse(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The alerts of a version-4 payload, each checked for the fields we use."""
    if data.get("version") != "4":
        raise PayloadError(f"not an Alertmanager v4 webhook (version={data.get('version')!r})")
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts must be a list")
    if len(alerts) > MAX_ALERTS:
        raise PayloadError(f"more than {MAX_ALERTS} alerts in one notification")
    out = []
    for i, a in enumerate(alerts):
        if not isinstance(a, dict):
            raise PayloadError(f"alerts[{i}] must be an object")
        status, fingerprint, starts = a.get("status"), a.get("fingerprint"), a.get("startsAt")
        if status not in ("firing", "resolved"):
            raise PayloadError(f"alerts[{i}].status must be firing or resolved")
        if not isinstance(fingerprint, str) or not re.fullmatch(r"[0-9a-fA-F]{1,64}", fingerprint):
            raise PayloadError(f"alerts[{i}].fingerprint must be a hex string")
        if not isinstance(starts, str) or not re.fullmatch(r"[0-9T:.+Zz-]{10,40}", starts):
            raise PayloadError(f"alerts[{i}].startsAt must be an RFC 3339 time")
        labels = _str_map(a.get("labels", {}), f"alerts[{i}].labels")
        out.append(
            {"status": status, "fingerprint": fingerprint.lower(), "starts": starts}
            | {"labels": labels}
        )
    return out


def matches(route: AlertRoute, labels: dict[str, str]) -> bool:
    return labels.get("alertname") == route.alertname and all(
        labels.get(k) == v for k, v in route.labels.items()
    )


def substitute(route: AlertRoute, labels: dict[str, str]) -> dict[str, str]:
    """The route's params with ``${labels.NAME}`` filled in; a missing or unsafe label value
    is a :class:`PayloadError` (that alert starts nothing)."""

    def fill(m: re.Match[str]) -> str:
        value = labels.get(m.group(1))
        if value is None:
            raise PayloadError(f"the alert has no label {m.group(1)!r}")
        if not SAFE_LABEL.fullmatch(value):
            raise PayloadError(f"label {m.group(1)!r} has an unsafe value for a param")
        return value

    return {k: LABEL_REF.sub(fill, v) for k, v in route.params.items()}


def alert_key(route: AlertRoute, alert: dict[str, Any]) -> str:
    """One firing episode of one alert, for one route: the dedup key (``commit`` column)."""
    return f"alert:{route.name}:{route.alertname}:{alert['fingerprint']}@{alert['starts']}"


def route_of(request: RunRequest) -> str:
    """``alert:<route>:<alertname>:<fingerprint>@<startsAt>`` -> ``<route>``."""
    return request.commit.removeprefix("alert:").split(":", 1)[0]


def requests_for(
    config: AlertmanagerConfig, alerts: list[dict[str, Any]], delivery: str
) -> tuple[list[RunRequest], list[str]]:
    """Requests for the firing alerts a route matches, and why the others start nothing."""
    requests: list[RunRequest] = []
    skipped: list[str] = []
    for alert in alerts:
        name = alert["labels"].get("alertname", "?")
        if alert["status"] != "firing":
            skipped.append(f"{name}: resolved")
            continue
        routes = [r for r in config.routes if matches(r, alert["labels"])]
        if not routes:
            skipped.append(f"{name}: no route matches")
            continue
        for route in routes:
            try:
                params = substitute(route, alert["labels"])
            except PayloadError as e:
                skipped.append(f"{name}: {e}")
                continue
            requests.append(
                RunRequest(
                    source=SOURCE,
                    delivery=delivery,
                    repo=redact(route.repo_url),
                    branch=route.revision,
                    commit=alert_key(route, alert),
                    pipeline=route.pipeline,
                    params=redact_values(
                        pipeline_params(route.pipeline, run_inputs(route, params))
                    ),
                    concurrency=route.concurrency,
                )
            )
    return requests, skipped


def run_inputs(route: AlertRoute, params: dict[str, str]) -> dict[str, str]:
    return {**params, "repo-url": route.repo_url, "revision": route.revision}


def run_params(config: AlertmanagerConfig | None, request: RunRequest) -> dict[str, str]:
    """The params a stored alert request runs with: the route's as configured now, and the
    label-derived ones as the alert carried them (stored; label values hold no credentials)."""
    name = route_of(request)
    route = config.route(name) if config is not None else None
    if route is None:
        raise NotConfigured(f"alert route {name!r} is no longer configured")
    fixed = {k: v for k, v in route.params.items() if k not in route.templated()}
    from_alert = {k: request.params[k] for k in route.templated() if k in request.params}
    return pipeline_params(route.pipeline, run_inputs(route, {**fixed, **from_alert}))


def delivery_id(body: bytes) -> str:
    """Alertmanager sends no delivery id: the body's hash (a retried POST dedups)."""
    return f"{SOURCE}:sha256:" + hashlib.sha256(body).hexdigest()
