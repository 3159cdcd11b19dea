"""The monitoring render (render/monitoring.py), checked by the tools that load it: promtool
checks and unit-tests the rules, amtool checks the Alertmanager config and its routing, and
every PromQL query of the Grafana dashboard is parsed by promtool. Everything is rendered in
memory; the committed files are the drift test's business."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskyard.render import emit, kustomize, monitoring
from taskyard.render.accounts import POD_LABELS
from tests import promtool

ROOT = Path(__file__).resolve().parents[1]
FILES = monitoring.files()
DIR = monitoring.ROOT
MODEL = {"job": "taskyard-model", "model": "wine", "version": "3"}
TARGET = {**MODEL, "instance": "10.0.0.7:8080"}


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _write(path: Path, doc: Any) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _annotations(alert: str, **values: str) -> dict[str, str]:
    """The rule's annotations as Prometheus expands them, for these labels and $value text."""
    (rule,) = [r for r in monitoring.alerting_rules() if r.get("alert") == alert]
    out = {}
    for key, text in rule["annotations"].items():
        for name, value in values.items():
            text = text.replace("{{ $labels." + name + " }}", value)
        text = re.sub(r"\{\{ \$value[^}]*\}\}", values.get("value", ""), text)
        assert "{{" not in text, text
        out[key] = text
    return out


# ---- files -----------------------------------------------------------------------------------
def test_files_and_their_format() -> None:
    assert set(FILES) == {
        f"{DIR}/{n}"
        for n in (
            "prometheus-rule.yaml",
            "rules.yml",
            "alertmanager.yml",
            "grafana-dashboard.json",
            "grafana-dashboard-configmap.yaml",
        )
    }
    for rel, text in FILES.items():
        if rel.endswith(".json"):
            assert json.loads(text) == monitoring.dashboard()
            assert text == json.dumps(monitoring.dashboard(), indent=2) + "\n"
        else:
            assert text.startswith(emit.HEADER), rel
    assert yaml.safe_load(FILES[f"{DIR}/rules.yml"]) == monitoring.rules_file()
    assert yaml.safe_load(FILES[f"{DIR}/alertmanager.yml"]) == monitoring.alertmanager_config()
    assert yaml.safe_load(FILES[f"{DIR}/prometheus-rule.yaml"]) == monitoring.prometheus_rule()


def test_the_files_are_in_the_render_with_an_install_set_of_rule_and_configmap() -> None:
    assert list(emit.ENGINES)[-2:] == ["monitoring", "distribution"]
    rendered = emit.rendered()
    for rel, text in FILES.items():
        assert rendered[rel] == text
    # The set's kustomization is the distribution engine's, picked by rule from deploy/.
    assert (
        rendered[f"{DIR}/kustomization.yaml"] == kustomize.files(FILES)[f"{DIR}/kustomization.yaml"]
    )


def test_the_install_set_is_the_prometheus_rule_and_the_dashboard_configmap() -> None:
    (only,) = kustomize.install_sets(FILES)  # .yml and .json files are no Kubernetes objects
    assert only.folder == DIR and only.bases == ()
    assert only.resources == ["grafana-dashboard-configmap.yaml", "prometheus-rule.yaml"]


# ---- Prometheus rules ------------------------------------------------------------------------
def test_promtool_checks_the_rule_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(FILES[f"{DIR}/rules.yml"])
    out = promtool.ok("promtool", "check", "rules", path, cwd=tmp_path)
    assert "SUCCESS: 8 rules found" in out


def test_promtool_checks_the_prometheus_rule_groups(tmp_path: Path) -> None:
    spec = yaml.safe_load(FILES[f"{DIR}/prometheus-rule.yaml"])["spec"]
    path = _write(tmp_path / "spec.yml", {"groups": spec["groups"]})
    promtool.ok("promtool", "check", "rules", path, cwd=tmp_path)


def test_promtool_rejects_a_planted_error(tmp_path: Path) -> None:
    rules = monitoring.rules_file()
    rules["groups"][0]["rules"][-1]["expr"] = "taskyard_model_drift_score >"
    proc = promtool.run("promtool", "check", "rules", _write(tmp_path / "r.yml", rules))
    assert proc.returncode != 0 and "parse error" in proc.stdout + proc.stderr


def test_prometheus_rule_shape() -> None:
    doc = monitoring.prometheus_rule()
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert doc["metadata"]["namespace"] == "taskyard" and doc["metadata"]["name"]
    assert POD_LABELS.items() <= doc["metadata"]["labels"].items()
    assert monitoring.prometheus_rule("other")["metadata"]["namespace"] == "other"
    assert set(doc["spec"]) == {"groups"}
    assert doc["spec"]["groups"] == monitoring.rules_file()["groups"]
    # The operator's CRD fields: Rule = record|alert, expr, for, labels, annotations.
    for group in doc["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for rule in group["rules"]:
            assert set(rule) <= {"record", "alert", "expr", "for", "labels", "annotations"}
            assert ("record" in rule) != ("alert" in rule) and rule["expr"]
            if "record" in rule:
                assert set(rule) == {"record", "expr"}
                assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["record"])
            for value in [*rule.get("labels", {}).values(), *rule.get("annotations", {}).values()]:
                assert isinstance(value, str)


def test_every_alert_has_severity_runbook_and_templated_description() -> None:
    rules = [r for r in monitoring.rule_groups()[0]["rules"] if "alert" in r]
    assert [r["alert"] for r in rules] == list(monitoring.ALERTS)
    docs = (ROOT / "docs" / "monitoring.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", docs, re.M)
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert "model" not in rule["labels"] and "version" not in rule["labels"]  # kept
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}
        assert "{{ $labels.model }}" in notes["description"]
        assert "{{ $value" in notes["description"]
        base, _, anchor = notes["runbook_url"].partition("#")
        assert base == "https://github.com/taskyard/taskyard/blob/main/docs/monitoring.md"
        assert anchor in anchors, f"docs/monitoring.md has no heading for #{anchor}"
    drift = rules[-1]
    assert drift["labels"]["taskyard_action"] == "retrain"
    assert drift["expr"] == "taskyard_model_drift_score > taskyard_model_drift_threshold"
    assert all("taskyard_action" not in r["labels"] for r in rules[:-1])


def test_durations_and_thresholds_are_parameters() -> None:
    group = monitoring.rule_groups(
        latency_for="0s", errors_for="0s", drift_for="0s", latency_p99_s=0.5, error_ratio=0.1
    )[0]
    alerts = {r["alert"]: r for r in group["rules"] if "alert" in r}
    assert {r["for"] for r in alerts.values()} == {"0s"}
    assert alerts[monitoring.HIGH_LATENCY]["expr"].endswith("> 0.5")
    assert "> 0.1 and" in alerts[monitoring.HIGH_ERRORS]["expr"]
    default = {r["alert"]: r["for"] for r in monitoring.rule_groups()[0]["rules"] if "alert" in r}
    assert default == {
        monitoring.HIGH_LATENCY: "10m",
        monitoring.HIGH_ERRORS: "5m",
        monitoring.DATA_DRIFT: "5m",
    }


def _latency_series(le_hit: str, rows: list[str]) -> list[dict[str, str]]:
    """A histogram where every request (60/min) lands in bucket ``le_hit`` and above."""
    out = []
    for le in rows:
        per_min = 60 if float(le) >= float(le_hit) else 0
        labels = {**TARGET, "path": "/invocations", "le": le}
        out.append(
            _series("taskyard_model_request_duration_seconds_bucket", labels, f"0+{per_min}x30")
        )
    return out


def _requests(status: str, per_min: int, *, path: str = "/invocations") -> dict[str, str]:
    labels = {**TARGET, "path": path, "status": status}
    return _series("taskyard_model_requests_total", labels, f"100+{per_min}x30")


BUCKETS = ["0.1", "1", "2.5", "+Inf"]


def _alert(name: str, labels: dict[str, str], **values: str) -> dict[str, Any]:
    return {
        "exp_labels": labels,
        "exp_annotations": _annotations(name, **{**labels, **values}),
    }


def _unit_tests() -> list[dict[str, Any]]:
    lat, err, drift = monitoring.HIGH_LATENCY, monitoring.HIGH_ERRORS, monitoring.DATA_DRIFT
    served = {"severity": "warning", **MODEL}  # recorded series: summed over instances
    return [
        {  # latency high: every request between 1s and 2.5s, p99 = 1 + 0.99 * 1.5
            "name": "latency high",
            "interval": "1m",
            "input_series": _latency_series("2.5", BUCKETS),
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": lat, "exp_alerts": []},  # pending (for: 10m)
                {
                    "eval_time": "15m",
                    "alertname": lat,
                    "exp_alerts": [_alert(lat, served, value="2.485s")],
                },
            ],
            "promql_expr_test": [
                {
                    "expr": monitoring.LATENCY_P99,
                    "eval_time": "15m",
                    "exp_samples": [
                        {
                            "labels": f'{monitoring.LATENCY_P99}{{job="taskyard-model",'
                            'model="wine",version="3"}',
                            "value": 2.485,
                        }
                    ],
                }
            ],
        },
        {  # latency low: every request under 0.1s
            "name": "latency low",
            "interval": "1m",
            "input_series": _latency_series("0.1", BUCKETS),
            "alert_rule_test": [{"eval_time": "20m", "alertname": lat, "exp_alerts": []}],
        },
        {  # errors high: 6 of 60 requests a minute answered 500; 413s are the client's fault
            "name": "errors high",
            "interval": "1m",
            "input_series": [
                _requests("200", 50),
                _requests("413", 4),
                _requests("500", 6),
                _requests("503", 0, path="/ping"),
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": err, "exp_alerts": []},  # pending (for: 5m)
                {
                    "eval_time": "15m",
                    "alertname": err,
                    "exp_alerts": [
                        _alert(err, {**served, "severity": "critical"}, value="10%"),
                    ],
                },
            ],
        },
        {  # errors low: 1 in 100
            "name": "errors low",
            "interval": "1m",
            "input_series": [_requests("200", 99), _requests("500", 1)],
            "alert_rule_test": [{"eval_time": "20m", "alertname": err, "exp_alerts": []}],
        },
        {  # no traffic: the counters stand still (a past burst of 500s included): 0/0, no alert
            "name": "errors without traffic",
            "interval": "1m",
            "input_series": [_requests("200", 0), _requests("500", 0)],
            "alert_rule_test": [{"eval_time": "20m", "alertname": err, "exp_alerts": []}],
        },
        {  # traffic and no 5xx series at all: the ratio is 0, not absent
            "name": "error ratio zero without 5xx series",
            "interval": "1m",
            "input_series": [_requests("200", 60)],
            "promql_expr_test": [
                {
                    "expr": monitoring.ERROR_RATIO,
                    "eval_time": "10m",
                    "exp_samples": [
                        {
                            "labels": f'{monitoring.ERROR_RATIO}{{job="taskyard-model",'
                            'model="wine",version="3"}',
                            "value": 0,
                        }
                    ],
                }
            ],
            "alert_rule_test": [{"eval_time": "10m", "alertname": err, "exp_alerts": []}],
        },
        {  # drift above the threshold: the instance stays (the listener fetches its window)
            "name": "drift above threshold",
            "interval": "1m",
            "input_series": [
                _series("taskyard_model_drift_score", TARGET, "0.25x20"),
                _series("taskyard_model_drift_threshold", TARGET, "0x20"),
            ],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": drift, "exp_alerts": []},  # pending (for: 5m)
                {
                    "eval_time": "10m",
                    "alertname": drift,
                    "exp_alerts": [
                        _alert(
                            drift,
                            {**TARGET, "severity": "warning", "taskyard_action": "retrain"},
                            value="25%",
                        )
                    ],
                },
            ],
        },
        {
            "name": "drift below threshold",
            "interval": "1m",
            "input_series": [
                _series("taskyard_model_drift_score", TARGET, "0.25x20"),
                _series("taskyard_model_drift_threshold", TARGET, "0.5x20"),
            ],
            "alert_rule_test": [{"eval_time": "10m", "alertname": drift, "exp_alerts": []}],
        },
        {  # the window is not full yet: no score, no alert
            "name": "drift score absent",
            "interval": "1m",
            "input_series": [_series("taskyard_model_drift_threshold", TARGET, "0x20")],
            "alert_rule_test": [{"eval_time": "10m", "alertname": drift, "exp_alerts": []}],
        },
    ]


def test_expected_annotations_read_as_a_person_would() -> None:
    got = _annotations(monitoring.DATA_DRIFT, **TARGET, value="25%")
    assert got["description"] == (
        "25% of the input features of wine version 3 drifted over the server's window of "
        "recent inputs (instance 10.0.0.7:8080); retraining is requested."
    )
    assert got["summary"] == "Model wine: input data drifted from the training data"


def test_promtool_unit_tests_each_alert_firing_and_not(tmp_path: Path) -> None:
    _write(tmp_path / "rules.yml", monitoring.rules_file())
    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": _unit_tests()}
    out = promtool.ok("promtool", "test", "rules", _write(tmp_path / "t.yml", tests), cwd=tmp_path)
    assert "SUCCESS" in out


def test_promtool_unit_test_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests above can fail: a firing alert expected where none fires does."""
    _write(tmp_path / "rules.yml", monitoring.rules_file())
    (case,) = [t for t in _unit_tests() if t["name"] == "drift below threshold"]
    case["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"severity": "warning"}}]
    tests = {"rule_files": ["rules.yml"], "tests": [case]}
    proc = promtool.run("promtool", "test", "rules", _write(tmp_path / "t.yml", tests))
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr


def test_zero_durations_fire_at_once(tmp_path: Path) -> None:
    """What the e2e test renders: for: 0s, the drift alert fires on the first evaluation."""
    _write(tmp_path / "rules.yml", monitoring.rules_file(drift_for="0s"))
    labels = {**TARGET, "severity": "warning", "taskyard_action": "retrain"}
    case = {
        "interval": "1m",
        "input_series": [
            _series("taskyard_model_drift_score", TARGET, "1x5"),
            _series("taskyard_model_drift_threshold", TARGET, "0x5"),
        ],
        "alert_rule_test": [
            {
                "eval_time": "0m",
                "alertname": monitoring.DATA_DRIFT,
                "exp_alerts": [_alert(monitoring.DATA_DRIFT, labels, value="100%")],
            }
        ],
    }
    tests = {"rule_files": ["rules.yml"], "tests": [case]}
    promtool.ok("promtool", "test", "rules", _write(tmp_path / "t.yml", tests), cwd=tmp_path)


def test_rules_and_dashboard_use_only_metrics_the_server_exports() -> None:
    import numpy as np

    from taskyard.serving.metrics import ServerMetrics

    metrics = ServerMetrics("models:/wine/3")
    metrics.request("/invocations", 200, 0.01)
    metrics.observe_predictions(np.array([1, 2]))
    exported = {s.name for fam in metrics.registry.collect() for s in fam.samples}
    exported |= {fam.name for fam in metrics.drift.describe()}
    text = FILES[f"{DIR}/rules.yml"] + FILES[f"{DIR}/grafana-dashboard.json"]
    used = set(re.findall(r"\btaskyard_model_[a-z_]+", text))
    assert used and used <= exported, used - exported


# ---- Alertmanager ----------------------------------------------------------------------------
@pytest.mark.parametrize("auth", monitoring.AUTHS)
def test_amtool_checks_the_config(tmp_path: Path, auth: str) -> None:
    path = _write(tmp_path / "alertmanager.yml", monitoring.alertmanager_config(auth=auth))
    out = promtool.ok("amtool", "check-config", path, cwd=tmp_path)
    assert "SUCCESS" in out and "2 receivers" in out


def test_the_committed_config_is_the_bearer_one_as_documented() -> None:
    conf = yaml.safe_load(FILES[f"{DIR}/alertmanager.yml"])
    route = conf["route"]
    assert route["receiver"] == "default" and route["group_by"] == ["alertname", "model"]
    assert route["routes"] == [
        {"receiver": "taskyard-retrain", "matchers": ['taskyard_action="retrain"']}
    ]
    receivers = {r["name"]: r for r in conf["receivers"]}
    assert receivers["default"] == {"name": "default"}
    (hook,) = receivers["taskyard-retrain"]["webhook_configs"]
    assert hook == {
        "url": "http://taskyard-listener:8080/alerts/alertmanager",
        "send_resolved": False,
        "max_alerts": 0,
        "http_config": {
            "authorization": {
                "type": "Bearer",
                "credentials_file": "/etc/alertmanager/secrets/taskyard-token",
            }
        },
    }
    basic = monitoring.alertmanager_config(auth="basic", username="am", password_file="/p")
    (hook,) = basic["receivers"][1]["webhook_configs"]
    assert hook["http_config"] == {"basic_auth": {"username": "am", "password_file": "/p"}}
    with pytest.raises(ValueError, match="auth"):
        monitoring.alertmanager_config(auth="token")


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            ["alertname=TaskyardModelDataDrift", "model=wine", "taskyard_action=retrain"],
            "taskyard-retrain",
        ),
        (["alertname=TaskyardModelHighLatencyP99", "model=wine", "severity=warning"], "default"),
        (["alertname=TaskyardModelHighErrorRate", "taskyard_action=page"], "default"),
    ],
)
def test_amtool_routes_retrain_alerts_to_the_listener(
    tmp_path: Path, labels: list[str], receiver: str
) -> None:
    path = _write(tmp_path / "alertmanager.yml", monitoring.alertmanager_config())
    args = ["config", "routes", "test", f"--config.file={path}"]
    proc = promtool.run("amtool", *args, f"--verify.receivers={receiver}", *labels, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == receiver, proc.stdout + proc.stderr
    wrong = "default" if receiver != "default" else "taskyard-retrain"
    proc = promtool.run("amtool", *args, f"--verify.receivers={wrong}", *labels, cwd=tmp_path)
    assert proc.returncode != 0


# ---- Grafana ---------------------------------------------------------------------------------
def test_dashboard_model() -> None:
    dash = monitoring.dashboard()
    assert dash["schemaVersion"] == 39
    assert dash["uid"] == "taskyard-model-serving" and dash["title"] == "taskyard model serving"
    assert dash["description"].startswith("Generated by `taskyard render`")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query" and model["query"]["query"].startswith("label_values(")
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    assert {p["type"] for p in panels} == {"timeseries", "stat", "state-timeline"}
    cells: set[tuple[int, int]] = set()
    for p in panels:
        grid = p["gridPos"]
        assert set(grid) == {"x", "y", "w", "h"} and grid["x"] + grid["w"] <= 24, p["title"]
        xs, ys = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        mine = {(x, y) for x in xs for y in ys}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"] and t["legendFormat"] and t["datasource"] == p["datasource"]
            assert 'model=~"$model"' in t["expr"], (p["title"], t["expr"])
    (served,) = [p for p in panels if p["type"] == "state-timeline"]
    assert served["targets"][0]["expr"] == (
        'max by (model, version) (taskyard_model_ready{model=~"$model"})'
    )


def test_dashboard_configmap_carries_the_json_for_the_grafana_sidecar() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
    doc = yaml.safe_load(FILES[f"{DIR}/grafana-dashboard-configmap.yaml"])
    assert doc["kind"] == "ConfigMap" and doc["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert POD_LABELS.items() <= doc["metadata"]["labels"].items()
    (text,) = doc["data"].values()
    assert text == FILES[f"{DIR}/grafana-dashboard.json"]
    kv.validate(doc, kv.latest_version(), strict=True)


def _grafana_to_promql(expr: str) -> str:
    """Grafana's variables replaced by what they become at query time."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    expr = re.sub(r"\$\{?__range\}?", "6h", expr)
    expr = re.sub(r"\$\{?model\}?", ".*", expr)
    assert "$" not in expr, expr
    return expr


def _dashboard_rules(dash: dict[str, Any]) -> dict[str, Any]:
    """One group per panel (named by its title, which promtool's errors quote), each query a
    recording rule: promtool 2.42 has no offline PromQL parser of its own (no `promql`
    command), but `check rules` parses every expr."""
    groups = []
    for p in dash["panels"]:
        rules = [
            {"record": f"panel_{p['id']}_{t['refId']}", "expr": _grafana_to_promql(t["expr"])}
            for t in p["targets"]
        ]
        groups.append({"name": f"panel {p['id']}: {p['title']}", "rules": rules})
    return {"groups": groups}


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    dash = json.loads(FILES[f"{DIR}/grafana-dashboard.json"])
    path = _write(tmp_path / "dashboard-queries.yml", _dashboard_rules(dash))
    out = promtool.ok("promtool", "check", "rules", path, cwd=tmp_path)
    n = sum(len(p["targets"]) for p in dash["panels"])
    assert f"SUCCESS: {n} rules found" in out


def test_a_broken_dashboard_query_is_reported_by_panel(tmp_path: Path) -> None:
    dash = copy.deepcopy(monitoring.dashboard())
    dash["panels"][2]["targets"][0]["expr"] += " by"
    path = _write(tmp_path / "dashboard-queries.yml", _dashboard_rules(dash))
    proc = promtool.run("promtool", "check", "rules", path, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and dash["panels"][2]["title"] in out, out
