"""The retraining loop on one machine, every part real and started here.

The champion of the bundled example is trained and served by the catalog pipeline; a real
Prometheus (Debian's ``prometheus``) scrapes the server's ``/metrics`` and evaluates the rendered
rules; a real Alertmanager (Debian's ``prometheus-alertmanager``) posts the drift alert, with a
bearer token, to a real ``taskyard serve``, which runs ``drift-retrain``. The test sends
in-distribution traffic first (no alert, a low drift score), then shifted traffic, and reads the
run the alert started: its trigger, detect-drift's verdict and the gate's decision.

The rules are the rendered ones with ``for: 0s`` (the same function, shorter durations) and the
intervals are 1 s, so the loop closes in seconds instead of minutes.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskyard import deployments
from taskyard.demo import publish
from taskyard.deployments import free_port
from taskyard.run.store import RunStore
from tests.cliutil import taskyard
from tests.serveutil import ServeProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
MODEL = "wine-classifier"
HOST = "127.0.0.1"
TOKEN = "e2e-alertmanager-token"
SHIFTED = "proline"  # moved by 3 sd in the shifted traffic
BINARIES = {"prometheus": "prometheus", "alertmanager": "prometheus-alertmanager"}

pytestmark = pytest.mark.slow


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} missing in CI: `make test` installs Debian's package")
    pytest.skip(f"{name} not installed (Debian package; `make test` installs it as root)")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def post_json(url: str, body: Any) -> Any:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


class Daemon:
    """A server process in its own process group, stopped by that group."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name, self.log = name, log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def wine_frame() -> Any:
    """The example's features as its loader makes them (what the model is fed)."""
    sys.path.insert(0, str(ROOT / "examples" / MODEL))
    try:
        data = importlib.import_module("wine_classifier.data")
        frame = data.load()
    finally:
        sys.path.remove(str(ROOT / "examples" / MODEL))
    return frame.drop(columns=["target"])


def send(url: str, frame: Any, rows: int, seed: int, batch: int = 100) -> None:
    sample = frame.sample(n=rows, replace=True, random_state=seed)
    for start in range(0, rows, batch):
        part = sample.iloc[start : start + batch]
        body = {"dataframe_split": json.loads(part.to_json(orient="split", index=False))}
        post_json(f"{url}/invocations", body)


def prom_value(prom: str, query: str) -> float | None:
    got = get_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    result = got["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in reversed(started):
        d.stop()


def test_shifted_traffic_fires_the_drift_alert_and_alertmanager_runs_drift_retrain(
    ml_home: Path, tmp_path: Path, daemons: list[Daemon]
) -> None:
    from taskyard.render import monitoring

    prometheus, alertmanager = (binary(b) for b in BINARIES.values())

    # 1. The champion, trained, promoted and served by the catalog pipeline.
    url, _ = publish()
    port = free_port(HOST)
    first = taskyard(
        "run", "retrain", "-p", f"repo-url={url}", "-p", "allow-file-url=true",
        "-p", f"deploy-port={port}", "-p", "keep-serving=true",
    )  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    (served,) = deployments.list_deployments()
    assert served.model == MODEL and served.version == "1"
    model_url = served.url
    health = wait_for(lambda: get_json(f"{model_url}/health"), 60, 0.5, what="the model")
    assert health["status"] == "ready"

    # 2. taskyard serve with an Alertmanager receiver (bearer token) routing the drift alert.
    token_file = tmp_path / "alert-token"
    token_file.write_text(TOKEN + "\n")
    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": {"host": HOST, "port": 0},
                "workers": 1,
                "alertmanager": {
                    "bearer-token": {"file": str(token_file)},
                    "routes": [
                        {
                            "name": "wine-drift",
                            "alertname": "TaskyardModelDataDrift",
                            "labels": {"model": MODEL},
                            "pipeline": "drift-retrain",
                            "repo-url": url,
                            "revision": "main",
                            "params": {
                                "current": "http://${labels.instance}/monitoring/window",
                                "allow-file-url": "true",
                                "keep-serving": "true",
                            },
                        }
                    ],
                },
            }
        )
    )
    listener = ServeProcess(config, tmp_path / "serve-state", {}).start()
    try:
        # 3. Alertmanager, posting to the listener with the rendered receiver config.
        am_port, prom_port = free_port(HOST), free_port(HOST)
        am_config = monitoring.alertmanager_config(
            url=f"{listener.url}/alerts/alertmanager",
            credentials_file=str(token_file),
            group_wait="1s",
            group_interval="1s",
            repeat_interval="1h",
        )
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
        daemons.append(
            Daemon(
                "alertmanager",
                [
                    alertmanager,
                    f"--config.file={tmp_path / 'alertmanager.yml'}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address={HOST}:{am_port}",
                    "--cluster.listen-address=",  # one instance: no gossip port
                ],
                tmp_path / "alertmanager.log",
            )
        )
        am = f"http://{HOST}:{am_port}"
        wait_for(lambda: _ready(f"{am}/-/ready"), 30, 0.2, what="alertmanager")

        # 4. Prometheus scraping the model server, evaluating the rendered rules every second.
        rules = monitoring.rules_file(
            latency_for="0s", errors_for="0s", drift_for="0s", interval="1s"
        )
        (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "rules.yml")],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"{HOST}:{am_port}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": "taskyard-model",
                    "static_configs": [{"targets": [f"{HOST}:{served.port}"]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        daemons.append(
            Daemon(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    f"--web.listen-address={HOST}:{prom_port}",
                ],
                tmp_path / "prometheus.log",
            )
        )
        prom = f"http://{HOST}:{prom_port}"
        wait_for(lambda: _ready(f"{prom}/-/ready"), 30, 0.2, what="prometheus")

        # 5. In-distribution traffic: a drift score, low; no alert; nothing started.
        frame = wine_frame()
        send(model_url, frame, 1000, seed=1)
        query = f'taskyard_model_drift_score{{model="{MODEL}"}}'
        wait_for(lambda: prom_value(prom, query) is not None, 30, 0.5, what="a drift score")
        assert prom_value(prom, query) == 0.0
        time.sleep(3)  # a few evaluations: the drift alert must not fire
        assert prom_value(prom, 'ALERTS{alertname="TaskyardModelDataDrift"}') is None
        assert get_json(f"{listener.url}/healthz")["requests"] == {}

        # 6. Shifted traffic: the alert fires, Alertmanager posts, the listener runs the loop.
        shifted = frame.copy()
        shifted[SHIFTED] = shifted[SHIFTED] + 3 * frame[SHIFTED].std()
        send(model_url, shifted, 1000, seed=2)
        firing = 'ALERTS{alertname="TaskyardModelDataDrift",alertstate="firing"}'
        wait_for(lambda: prom_value(prom, firing), 30, 0.5, what="the drift alert")
        requests = wait_for(
            lambda: get_json(f"{listener.url}/healthz")["requests"], 30, 0.5, what="the webhook"
        )
        assert set(requests) <= {"accepted", "running", "succeeded", "failed"}
        done = wait_for(
            lambda: _finished(get_json(f"{listener.url}/healthz")["requests"]),
            240,
            1.0,
            what="drift-retrain to finish",
        )
        assert done == "succeeded", listener.log.read_text()[-3000:]
    finally:
        listener.kill()

    # 7. The run record: the alert as its trigger, drift detected, the gate decided.
    (run,) = [r for r in RunStore().list() if r.pipeline == "drift-retrain"]
    assert run.status == "Succeeded", run.reason
    assert run.trigger["source"] == "alertmanager"
    assert run.trigger["alert"].startswith("alert:wine-drift:TaskyardModelDataDrift:")
    assert run.params["current"] == f"http://{HOST}:{served.port}/monitoring/window"
    assert run.results["drifted"] == "true"
    assert SHIFTED in run.tasks["detect-drift"].results["drifted-features"]
    assert run.tasks["train"].state == "Succeeded"
    assert run.tasks["evaluate"].state == "Succeeded"
    decided = run.results["promote"]
    assert decided in ("true", "false")
    # Same commit, same data: the retrained model ties the champion, the gate keeps it.
    assert decided == "false" and run.tasks["promote"].state == "Skipped"
    # The alert was delivered once per firing episode: one request, one run.
    assert [r.pipeline for r in RunStore().list()].count("drift-retrain") == 1


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _finished(counts: dict[str, int]) -> str | None:
    for state in ("succeeded", "failed"):
        if counts.get(state):
            return state
    return None
