"""Alertmanager's webhook into `taskyard serve`: auth, payloads, routes, dedup, run params.

Payloads have the shape of Alertmanager's webhook (version 4: prometheus.io/docs/alerting/
latest/configuration/#webhook_config); the end-to-end test with a real Alertmanager is
tests/test_monitoring_e2e.py.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from taskyard.serve import alerts
from taskyard.serve import config as cfg
from taskyard.serve.app import Listener
from taskyard.serve.client import Client
from taskyard.serve.events import run_params
from taskyard.serve.submit import NoopSubmitter, command, trigger
from tests.serveutil import SECRET, SECRET_ENV, write_config

TOKEN = "alert-token-0123456789"
TOKEN_ENV = "TASKYARD_TEST_ALERT_TOKEN"
REPO = "file:///srv/git/wine.git"
ROUTE = {
    "name": "wine-drift",
    "alertname": "TaskyardModelDataDrift",
    "labels": {"model": "wine-classifier"},
    "pipeline": "drift-retrain",
    "repo-url": REPO,
    "revision": "main",
    "params": {
        "current": "http://${labels.instance}/monitoring/window",
        "model-name": "wine-classifier",
        "allow-file-url": "true",
    },
}


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="TaskyardModelDataDrift"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "taskyard-retrain",
        "groupLabels": {"alertname": "TaskyardModelDataDrift"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts),
    }


def alert(
    fingerprint: str = "a1b2c3d4e5f60718",
    starts: str = "2026-12-02T14:00:05.123Z",
    status: str = "firing",
    **labels: str,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {
            "alertname": "TaskyardModelDataDrift",
            "model": "wine-classifier",
            "version": "1",
            "instance": "127.0.0.1:8081",
            "severity": "warning",
            "taskyard_action": "retrain",
            **labels,
        },
        "annotations": {"summary": "input drift"},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": fingerprint,
    }


def _config(tmp_path: Path, auth: dict[str, Any]) -> cfg.ServeConfig:
    path = write_config(
        tmp_path / "serve.yaml", alertmanager={**auth, "routes": [ROUTE]}, submitter="noop"
    )
    return cfg.load(path)


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    running = Listener(
        _config(tmp_path, {"bearer-token": {"env": TOKEN_ENV}}),
        tmp_path / "state",
        NoopSubmitter(),
    )
    running.start()
    yield running
    running.stop(grace=5)


def post(client: Client, body: Any, auth: str | None = f"Bearer {TOKEN}") -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    return client.request("POST", "/alerts/alertmanager", data, headers)


def test_a_firing_alert_is_stored_with_its_params(listener: Listener) -> None:
    client = Client(listener.url)
    got = post(client, payload(alert()))
    assert got.status == 202 and got.body["status"] == "accepted" and got.body["queued"] == 1
    (row,) = listener.store.all()
    r = row.request
    assert r.source == "alertmanager" and r.pipeline == "drift-retrain" and r.branch == "main"
    assert r.commit == (
        "alert:wine-drift:TaskyardModelDataDrift:a1b2c3d4e5f60718@2026-12-02T14:00:05.123Z"
    )
    assert r.params["current"] == "http://127.0.0.1:8081/monitoring/window"
    assert r.params["repo-url"] == REPO and r.params["revision"] == "main"
    # What the run gets: the route as configured now, the label-derived param as stored.
    params = run_params(listener.config, r)
    assert params["current"] == "http://127.0.0.1:8081/monitoring/window"
    assert params["model-name"] == "wine-classifier" and params["allow-file-url"] == "true"
    # The run record keeps what started it (taskyard run --trigger …).
    assert trigger(row) == {"source": "alertmanager", "delivery": r.delivery, "alert": r.commit}
    argv = command(row, "drift-retrain-x")
    assert argv[argv.index("--trigger") + 1] == "source=alertmanager"


def test_repeats_and_retries_of_one_firing_episode_start_one_run(listener: Listener) -> None:
    client = Client(listener.url)
    assert post(client, payload(alert())).body["status"] == "accepted"
    assert post(client, payload(alert())).body["status"] == "duplicate"  # a retried POST
    # The next repeat_interval: a new notification (other body), the same alert instance.
    again = payload(alert(), alert(fingerprint="ffff", model="other-model"))
    got = post(client, again)
    assert got.body["duplicates"] == 1 and got.body["queued"] == 0
    assert "no route matches" in got.body["skipped"][0]
    # The alert resolved and fired again: a new episode, a new run.
    assert post(client, payload(alert(starts="2026-12-02T16:00:00Z"))).body["queued"] == 1
    assert len(listener.store.all()) == 2


@pytest.mark.parametrize(
    "auth",
    [None, "Bearer wrong", f"bearer{TOKEN}", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"],
)
def test_unauthenticated_alerts_are_refused_and_store_nothing(
    listener: Listener, auth: str | None
) -> None:
    got = post(Client(listener.url), payload(alert()), auth=auth)
    assert got.status == 401 and "credentials" in got.body["error"]
    assert listener.store.all() == [] and listener.store.deliveries() == []


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"not json", 400, "not JSON"),
        (b"[1]", 400, "JSON object"),
        (json.dumps({"version": "3", "alerts": []}).encode(), 400, "v4"),
        (json.dumps({"version": "4", "alerts": "x"}).encode(), 400, "alerts must be a list"),
        (json.dumps(payload({**alert(), "status": "odd"})).encode(), 400, "firing or resolved"),
        (json.dumps(payload({**alert(), "fingerprint": "-x"})).encode(), 400, "fingerprint"),
        (json.dumps(payload({**alert(), "labels": {"a": 1}})).encode(), 400, "strings"),
    ],
)
def test_bad_payloads_are_one_line_400s(
    listener: Listener, body: bytes, status: int, says: str
) -> None:
    got = post(Client(listener.url), body)
    assert got.status == status and says in got.body["error"]
    assert listener.store.all() == []


def test_what_starts_nothing(listener: Listener) -> None:
    client = Client(listener.url)
    cases = [
        (payload(alert(status="resolved"), status="resolved"), "resolved"),
        (payload(alert(alertname="TaskyardModelHighLatencyP99")), "no route matches"),
        (payload(alert(model="another")), "no route matches"),
        (payload(alert(instance="127.0.0.1:80/../x?y")), "unsafe value"),
        (payload(), "no alerts"),
    ]
    for body, reason in cases:
        got = post(client, body)
        assert got.status == 202 and got.body["status"] == "ignored", got.body
        assert reason in got.body["reason"]
    missing = alert()
    del missing["labels"]["instance"]
    assert "no label 'instance'" in post(client, payload(missing)).body["reason"]
    assert listener.store.all() == []


def test_basic_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    (tmp_path / "pw").write_text("s3cret\n")
    password = {"file": str(tmp_path / "pw")}
    config = _config(tmp_path, {"basic-auth": {"username": "alertmanager", "password": password}})
    running = Listener(config, tmp_path / "state", NoopSubmitter())
    running.start()
    try:
        client = Client(running.url)

        def basic(user: str, pw: str) -> str:
            return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()

        assert post(client, payload(alert()), basic("alertmanager", "wrong")).status == 401
        assert post(client, payload(alert()), basic("someone", "s3cret")).status == 401
        assert post(client, payload(alert()), "Basic !!!").status == 401
        assert post(client, payload(alert()), f"Bearer {TOKEN}").status == 401
        assert post(client, payload(alert()), basic("alertmanager", "s3cret")).status == 202
    finally:
        running.stop(grace=5)


def test_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with pytest.raises(cfg.ServeError, match="exactly one of bearer-token or basic-auth"):
        cfg.load(write_config(tmp_path / "a.yaml", alertmanager={"routes": [ROUTE]}))
    bad = {**ROUTE, "pipeline": "nope"}
    with pytest.raises(cfg.ServeError, match="unknown pipeline 'nope'"):
        cfg.load(
            write_config(
                tmp_path / "b.yaml",
                alertmanager={"bearer-token": {"env": TOKEN_ENV}, "routes": [bad]},
            )
        )
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    config = _config(tmp_path, {"bearer-token": {"env": TOKEN_ENV}})
    with pytest.raises(cfg.ServeError, match=TOKEN_ENV):
        Listener(config, tmp_path / "state", NoopSubmitter())


def test_no_receiver_configured_is_a_404(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    running = Listener(
        cfg.load(write_config(tmp_path / "s.yaml")), tmp_path / "st", NoopSubmitter()
    )
    running.start()
    try:
        assert post(Client(running.url), payload(alert())).status == 404
    finally:
        running.stop(grace=5)


def test_a_route_removed_after_the_alert_fails_the_stored_request() -> None:
    request = alerts.requests_for(
        cfg.AlertmanagerConfig.model_validate({"bearer-token": {"env": "X"}, "routes": [ROUTE]}),
        alerts.parse(payload(alert())),
        "d",
    )[0][0]
    empty = cfg.AlertmanagerConfig.model_validate({"bearer-token": {"env": "X"}})
    with pytest.raises(LookupError, match="wine-drift"):
        alerts.run_params(empty, request)
