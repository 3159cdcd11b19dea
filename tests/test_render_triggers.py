"""Rendered triggers: Argo Events against its published schema (strict), Tekton Triggers by a
structural check of our own plus tekton-lint, core kinds by kubernetes-validate, and the
filters' behaviour (branches, deletes, paths, repository) checked by evaluating the rendered
regexes; RBAC against the verbs the engines' code paths use; every trigger and schedule path
traced to the values its run gets."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskyard.catalog import PIPELINES
from taskyard.errors import RenderError
from taskyard.render import argo_files, emit, triggers_argo, triggers_tekton
from taskyard.render._triggers import (
    CLUSTER_VALUES,
    DEFAULT,
    Plan,
    PushTrigger,
    glob_regex,
    repo_path,
)
from taskyard.render.values import CATALOG, Values
from tests import schemas, tekton_lint

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ["triggers-tekton", "triggers-argo"]
ARGO_EVENTS = "argo-events-v1.9.11/schema.json"
CORE_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRoleBinding"}
CORE_KINDS |= {"ConfigMap", "CronJob"}
WITH_PATHS = Plan(
    push=(PushTrigger("ci", ("main", "release/*"), ("src/*", "taskyard.toml")),),
    cron=DEFAULT.cron,
)
TEAM_REPO = "https://github.com/Acme/churn-model.git"
PINNED = Plan(
    push=DEFAULT.push,
    cron=DEFAULT.cron,
    values=Values(
        repo_url=TEAM_REPO,
        model_name="churn",
        mlflow_tracking_uri="http://mlflow.ml.svc:5000",
        pinned=True,
    ),
)
PLANS = [DEFAULT, WITH_PATHS, PINNED]
PLAN_IDS = ["default", "with-paths", "pinned"]


def _docs(files: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for text in files.values():
        assert text.startswith(emit.HEADER)
        out += [d for d in yaml.safe_load_all(text) if d]
    return out


def test_committed_files_match_a_fresh_render() -> None:
    assert emit.drift(ROOT, ENGINES) == [], "run `taskyard render`"
    paths = sorted(emit.rendered(ENGINES))
    assert all(p.startswith(("triggers/tekton/", "triggers/argo-events/")) for p in paths)


@pytest.mark.parametrize("plan", PLANS, ids=PLAN_IDS)
def test_argo_events_objects_validate_strictly(plan: Plan) -> None:
    validator = schemas.strict_validator(schemas.schema_path(ARGO_EVENTS))
    docs = [d for d in _docs(triggers_argo.files(plan)) if d["kind"] not in CORE_KINDS]
    assert {d["kind"] for d in docs} == {"EventSource", "Sensor"}
    for doc in docs:
        assert schemas.errors(validator, doc) == [], doc["metadata"]["name"]


def test_strict_mode_catches_a_typo() -> None:
    validator = schemas.strict_validator(schemas.schema_path(ARGO_EVENTS))
    sensor = triggers_argo.push_sensor(DEFAULT.push[0])
    sensor["spec"]["dependencies"][0]["filters"]["data"][0]["pth"] = "x"
    assert any("pth" in e for e in schemas.errors(validator, sensor))


def test_core_kinds_pass_kubernetes_validate() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
    docs = [
        d
        for d in _docs({**triggers_tekton.files(), **triggers_argo.files()})
        if d["kind"] in CORE_KINDS
    ]
    assert {d["kind"] for d in docs} == CORE_KINDS
    for doc in docs:
        kv.validate(doc, kv.latest_version(), strict=True)  # raises on any error


# -- RBAC: what the engines' code paths need, each with its source ------------------------------

# (apiGroup, resource, verb) the sensor's `argoWorkflow` trigger with `operation: submit` uses.
ARGO_SUBMIT_NEEDS = {
    # argo CLI (v3.7.9, bundled by argo-events v1.9.11's Dockerfile) `argo submit FILE`:
    # server/workflow/workflow_server.go CreateWorkflow -> Workflows(ns).Create
    ("argoproj.io", "workflows", "create"),
    # ... which first validates the workflowTemplateRef through
    # server/workflowtemplate/wf_client_store.go (WorkflowTemplates(ns).Get)
    ("argoproj.io", "workflowtemplates", "get"),
    # argo-events pkg/sensors/triggers/argo-workflow/argo-workflow.go Execute: after the submit,
    # List(LabelSelector: the sensor/trigger/timestamp labels) to return the created Workflow
    ("argoproj.io", "workflows", "list"),
}
# Tekton Triggers' own listener roles (tektoncd/triggers config/200-clusterrole.yaml), bound
# as tektoncd/triggers docs/eventlisteners.md and examples/rbac.yaml show.
UPSTREAM_LISTENER_ROLES = {
    ("RoleBinding", "tekton-triggers-eventlistener-roles"),
    ("ClusterRoleBinding", "tekton-triggers-eventlistener-clusterroles"),
}


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_sensor_may_do_exactly_what_argo_submit_does() -> None:
    (role,) = [d for d in triggers_argo.rbac() if d["kind"] == "Role"]
    assert _grants(role["rules"]) == ARGO_SUBMIT_NEEDS
    (binding,) = [d for d in triggers_argo.rbac() if d["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    for sensor in triggers_argo.objects()["sensors.yaml"]:
        assert sensor["spec"]["template"]["serviceAccountName"] == binding["subjects"][0]["name"]
        for trigger in sensor["spec"]["triggers"]:
            assert trigger["template"]["argoWorkflow"]["operation"] == "submit"


def test_listener_binds_the_upstream_roles() -> None:
    docs = triggers_tekton.rbac("ml-ci")
    assert not [d for d in docs if d["kind"] in ("Role", "ClusterRole")]  # no copies of ours
    bound = {(d["kind"], d["roleRef"]["name"]) for d in docs if "roleRef" in d}
    assert bound == UPSTREAM_LISTENER_ROLES
    for d in docs:
        if "roleRef" in d:
            assert d["roleRef"]["kind"] == "ClusterRole"
            assert d["subjects"] == [
                {"kind": "ServiceAccount", "name": triggers_tekton.ACCOUNT, "namespace": "ml-ci"}
            ]
    listener = triggers_tekton.event_listener()
    assert listener["spec"]["serviceAccountName"] == triggers_tekton.ACCOUNT


# -- Tekton Triggers: our structural check (their CRDs publish no schema) ---------------------

TRIGGER_KINDS = {"EventListener", "TriggerBinding", "TriggerTemplate"}
TT_PARAM = re.compile(r"\$\(tt\.params\.([a-z0-9-]+)\)")


def _check_tekton(docs: list[dict[str, Any]]) -> list[str]:
    """Fields, references and param plumbing a cluster would only reject at event time."""
    problems: list[str] = []
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        if d["kind"] in TRIGGER_KINDS:
            if d["apiVersion"] != "triggers.tekton.dev/v1beta1":
                problems.append(f"{d['kind']} apiVersion {d['apiVersion']}")
            if set(d) != {"apiVersion", "kind", "metadata", "spec"}:
                problems.append(f"{d['kind']} top-level keys {sorted(d)}")
    for b in by_kind.get("TriggerBinding", {}).values():
        name = b["metadata"]["name"]
        # The values binding, and an alert's (the alert names no repository): literals.
        literal = name == triggers_tekton.VALUES_BINDING or name.startswith("taskyard-alert-")
        for p in b["spec"]["params"]:
            if set(p) != {"name", "value"} or not (
                (literal and p["value"].strip() and "$(" not in p["value"])
                or re.fullmatch(r"\$\((body|header|extensions)\.[\w.]+\)", p["value"])
            ):
                problems.append(f"binding {b['metadata']['name']}: {p}")
    pr_validator = schemas.strict_validator(
        schemas.schema_path("tekton-v1.15.0/v1-openapiv3/PipelineRun.json")
    )
    for t in by_kind.get("TriggerTemplate", {}).values():
        declared = {p["name"] for p in t["spec"]["params"]}
        for run in t["spec"]["resourcetemplates"]:
            problems += [
                f"template {t['metadata']['name']}: {e}" for e in schemas.errors(pr_validator, run)
            ]
            used = set(TT_PARAM.findall(json.dumps(run)))
            if used != declared:
                problems.append(
                    f"template {t['metadata']['name']} uses {used}, declares {declared}"
                )
            pipeline = PIPELINES[run["spec"]["pipelineRef"]["name"]]
            names = {p.name for p in pipeline.params}
            required = {p.name for p in pipeline.params if p.default is None}
            given = {p["name"] for p in run["spec"]["params"]}
            if not given <= names or not required <= given:
                problems.append(f"template {t['metadata']['name']} params {given}")
            if "generateName" not in run["metadata"]:
                problems.append("a PipelineRun without generateName")
    for listener in by_kind.get("EventListener", {}).values():
        spec = listener["spec"]
        if spec["serviceAccountName"] not in by_kind.get("ServiceAccount", {}):
            problems.append("listener service account not rendered")
        for trig in spec["triggers"]:
            if set(trig) != {"name", "interceptors", "bindings", "template"}:
                problems.append(f"trigger {trig['name']} keys {sorted(trig)}")
            for b in trig["bindings"]:
                if b["ref"] not in by_kind["TriggerBinding"]:
                    problems.append(f"trigger {trig['name']}: no binding {b['ref']}")
            if trig["template"]["ref"] not in by_kind["TriggerTemplate"]:
                problems.append(f"trigger {trig['name']}: no template")
            first = trig["interceptors"][0]
            params = {p["name"]: p["value"] for p in first["params"]}
            if trig["name"].startswith("alert-"):  # CEL checks the bearer token first
                if first["ref"]["name"] != "cel" or not params["filter"].startswith(
                    "header.canonical('Authorization').startsWith('Bearer ') && "
                    "header.canonical('Authorization').substring(7).compareSecret("
                ):
                    problems.append(f"trigger {trig['name']}: authenticity is not checked first")
            elif first["ref"]["name"] not in ("github", "gitlab"):
                problems.append(f"trigger {trig['name']}: authenticity is not checked first")
            elif set(params) != {"secretRef", "eventTypes"} or not params["eventTypes"]:
                problems.append(f"trigger {trig['name']}: {params}")
            for i in trig["interceptors"]:
                if (
                    set(i) != {"name", "ref", "params"}
                    or i["ref"].get("kind") != "ClusterInterceptor"
                ):
                    problems.append(f"interceptor {i}")
    return problems


@pytest.mark.parametrize("plan", PLANS, ids=PLAN_IDS)
def test_tekton_triggers_structure(plan: Plan) -> None:
    assert _check_tekton(_docs(triggers_tekton.files(plan))) == []


def test_structure_check_catches_mistakes() -> None:
    docs = _docs(triggers_tekton.files())
    listener = next(d for d in docs if d["kind"] == "EventListener")
    listener["spec"]["triggers"][0]["template"]["ref"] = "taskyard-nope"
    listener["spec"]["triggers"][1]["interceptors"].reverse()
    template = next(d for d in docs if d["kind"] == "TriggerTemplate")
    template["spec"]["resourcetemplates"][0]["spec"]["pipelineRef"]["nmae"] = "x"
    problems = _check_tekton(docs)
    assert any("no template" in p for p in problems)
    assert any("authenticity" in p for p in problems)
    assert any("nmae" in p for p in problems)


def test_tekton_lint(tmp_path: Path) -> None:
    """tekton-lint over the triggers with the pipelines they reference: no problem in the
    triggers, no error anywhere. (tekton-lint 1.1.0's TriggerTemplate check takes optional
    workspaces as required; the templates now bind every one, so no exception is needed.)"""
    binary = tekton_lint.require()
    config = tmp_path / "config"
    config.mkdir()
    proc = subprocess.run(
        [
            str(binary),
            "--config",
            str(config),
            "--format",
            "json",
            "--color",
            "false",
            "triggers/tekton/*.yaml",
            "pipelines/**/*.yaml",
            "tasks/**/*.yaml",
        ],
        cwd=ROOT,
        env={**os.environ, "TL_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout
    problems = json.loads(out[out.index("[") :])
    real = [
        p
        for p in problems
        if (p["path"].startswith("triggers/") or p["level"] == "error")
        and not tekton_lint.wrong_report(p)
    ]
    assert real == []


# -- behaviour of the rendered filters -----------------------------------------------------


def _cel_regexes(expr: str) -> list[str]:
    return re.findall(r"matches\(r'([^']*)'\)", expr)


def test_branch_filters_and_deletes_on_every_engine() -> None:
    listener = triggers_tekton.event_listener()
    by_name = {t["name"]: t for t in listener["spec"]["triggers"]}
    ted = by_name["github-push-train-eval-deploy"]["interceptors"][1]["params"][0]["value"]
    (branch_re,) = _cel_regexes(ted)
    assert re.match(branch_re, "refs/heads/main")
    assert not re.match(branch_re, "refs/heads/main2")
    assert not re.match(branch_re, "refs/tags/main")
    ci = by_name["gitlab-push-ci"]["interceptors"][1]["params"][0]["value"]
    assert re.match(_cel_regexes(ci)[0], "refs/heads/feature/x")
    for name, trig in by_name.items():
        if name.startswith(("schedule-", "alert-")):
            continue
        expr = trig["interceptors"][1]["params"][0]["value"]
        assert "body.after != '" + "0" * 40 + "'" in expr
    assert "!body.deleted" in ted
    for sensor in triggers_argo.objects()["sensors.yaml"]:
        for dep in sensor["spec"]["dependencies"]:
            if dep["eventSourceName"] == triggers_argo.GITHUB_SOURCE:
                data = {f["path"]: f for f in dep["filters"]["data"]}
                assert data["body.deleted"]["value"] == ["false"]
                assert data["headers.X-Github-Event"]["value"] == ["push"]


def test_path_filters_render_on_both_engines() -> None:
    listener = triggers_tekton.event_listener(WITH_PATHS)
    expr = listener["spec"]["triggers"][0]["interceptors"][1]["params"][0]["value"]
    branch_re, *path_res = _cel_regexes(expr)
    assert set(path_res) == {glob_regex(("src/*", "taskyard.toml"))}
    assert re.match(path_res[0], "src/model/train.py") and re.match(path_res[0], "taskyard.toml")
    assert not re.match(path_res[0], "docs/taskyard.toml")
    assert re.match(branch_re, "refs/heads/release/2.0")
    sensor = triggers_argo.push_sensor(WITH_PATHS.push[0])
    script = sensor["spec"]["dependencies"][0]["filters"]["script"]
    assert '"^src/.*$"' in script and '"^taskyard%.toml$"' in script


def test_triggers_submit_the_exact_commit() -> None:
    binding = next(
        b for b in triggers_tekton.bindings() if b["metadata"]["name"] == "taskyard-github-push"
    )
    assert {p["name"]: p["value"] for p in binding["spec"]["params"]} == {
        "repo-url": "$(body.repository.clone_url)",
        "revision": "$(body.after)",
    }
    gitlab = next(
        b for b in triggers_tekton.bindings() if b["metadata"]["name"] == "taskyard-gitlab-push"
    )
    assert gitlab["spec"]["params"][0]["value"] == "$(body.project.git_http_url)"
    trigger = triggers_argo.push_sensor(DEFAULT.push[0])["spec"]["triggers"][0]
    wf = trigger["template"]["argoWorkflow"]
    params = wf["source"]["resource"]["spec"]["arguments"]["parameters"]
    dests = {p["dest"]: p["src"]["dataKey"] for p in wf["parameters"] if "dataKey" in p["src"]}
    # ci's MLflow URI only serves run-tests' cache: the catalog's server, tests cached there
    assert [p["name"] for p in params] == ["repo-url", "revision", "mlflow-tracking-uri"]
    assert dests == {
        "spec.arguments.parameters.0.value": "body.repository.clone_url",
        "spec.arguments.parameters.1.value": "body.after",
    }
    assert wf["source"]["resource"]["spec"]["workflowTemplateRef"]["name"] == "ci"
    assert (ROOT / "hera" / "ci.yaml").is_file()  # the WorkflowTemplate it names is rendered


# -- every path to a run carries the model name and the MLflow server (findings 4, 9) ----------


def _tekton_runs(docs: list[dict[str, Any]]) -> dict[str, tuple[str, dict[str, str]]]:
    """Listener trigger -> (pipeline, the PipelineRun params it creates), resolved the way
    Tekton Triggers does: bindings' params, then template defaults, substituted into
    ``$(tt.params.x)`` (tektoncd/triggers pkg/template/event.go, resource.go)."""
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    (listener,) = by_kind["EventListener"].values()
    out = {}
    for trig in listener["spec"]["triggers"]:
        given = {
            p["name"]: p["value"]
            for b in trig["bindings"]
            for p in by_kind["TriggerBinding"][b["ref"]]["spec"]["params"]
        }
        template = by_kind["TriggerTemplate"][trig["template"]["ref"]]
        for p in template["spec"]["params"]:
            if "default" in p:
                given.setdefault(p["name"], p["default"])
        (run,) = template["spec"]["resourcetemplates"]
        params = {
            p["name"]: TT_PARAM.sub(lambda m, g=given: g.get(m[1], m[0]), p["value"])
            for p in run["spec"]["params"]
        }
        out[trig["name"]] = (run["spec"]["pipelineRef"]["name"], params)
    return out


@pytest.mark.parametrize("plan", PLANS, ids=PLAN_IDS)
def test_no_trigger_or_schedule_leaves_model_or_mlflow_unset(plan: Plan) -> None:
    wanted = {"model-name": plan.values.model_name}
    wanted["mlflow-tracking-uri"] = plan.values.mlflow_tracking_uri
    paths = 0

    def check(where: str, pipeline: str, params: dict[str, str]) -> None:
        nonlocal paths
        for name in CLUSTER_VALUES:
            if name in {p.name for p in PIPELINES[pipeline].params}:
                assert params.get(name) == wanted[name], f"{where}: {name} = {params.get(name)}"
                paths += 1

    tekton_docs = _docs(triggers_tekton.files(plan))
    runs = _tekton_runs(tekton_docs)
    for where, (pipeline, params) in runs.items():
        check(f"tekton {where}", pipeline, params)
    # The CronJob's event reaches the listener trigger named after its schedule.
    for job in (d for d in tekton_docs if d["kind"] == "CronJob"):
        (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert runs[f"schedule-{env['SCHEDULE']}"][0] == env["PIPELINE"]
    for sensor in triggers_argo.objects(plan)["sensors.yaml"]:
        for trigger in sensor["spec"]["triggers"]:
            wf = trigger["template"]["argoWorkflow"]["source"]["resource"]
            args = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
            check(
                f"sensor {sensor['metadata']['name']}",
                wf["spec"]["workflowTemplateRef"]["name"],
                args,
            )
    assert paths >= 2 * len({t.pipeline for t in plan.push} - {"ci"}) + 2  # not vacuous


def test_the_argo_schedule_carries_model_and_mlflow() -> None:
    crons = [
        d
        for text in argo_files.files().values()
        for d in yaml.safe_load_all(text)
        if d and d["kind"] == "CronWorkflow"
    ]
    assert crons
    for cron in crons:
        spec = cron["spec"]["workflowSpec"]
        args = {p["name"]: p["value"] for p in spec["arguments"]["parameters"]}
        assert args["model-name"] == CATALOG.model_name
        assert args["mlflow-tracking-uri"] == CATALOG.mlflow_tracking_uri


def test_an_empty_model_or_mlflow_is_a_render_error() -> None:
    empty = Plan(push=DEFAULT.push, cron=(), values=Values(mlflow_tracking_uri=" "))
    with pytest.raises(RenderError, match="'mlflow-tracking-uri'"):
        triggers_tekton.files(empty)
    with pytest.raises(RenderError, match="'mlflow-tracking-uri'"):
        triggers_argo.files(empty)
    from taskyard.render import argo

    with pytest.raises(RenderError, match="'model-name'"):
        argo.cron_workflow(PIPELINES["retrain"], argo.CronOptions(arguments={"repo-url": "x"}))


def test_catalog_values_come_from_one_binding() -> None:
    """The generic render: one object to edit, and templates that never default them."""
    docs = _docs(triggers_tekton.files())
    values = [d for d in docs if d["metadata"]["name"] == triggers_tekton.VALUES_BINDING]
    assert len(values) == 1 and "taskyard.dev/edit" in values[0]["metadata"]["annotations"]
    literal = {p["name"] for p in values[0]["spec"]["params"]}
    assert literal == set(CLUSTER_VALUES)
    for t in (d for d in docs if d["kind"] == "TriggerTemplate"):
        for p in t["spec"]["params"]:
            if p["name"] in CLUSTER_VALUES:
                assert "default" not in p, (t["metadata"]["name"], p["name"])
    for d in docs:
        if d["kind"] == "TriggerTemplate":
            assert "my-model" not in json.dumps(d), d["metadata"]["name"]


# -- which repository may fire ---------------------------------------------------------------


def _accepts(regex: str, full_name: str) -> bool:
    return re.search(regex, full_name) is not None  # Go and Python agree on this subset


def test_a_pinned_render_fires_only_for_its_repository() -> None:
    """Argo's GitHub EventSource checks only the signature (argo-events
    pkg/eventsources/sources/github/start.go HandleRoute); the filter is ours."""
    regexes = []
    for sensor in triggers_argo.objects(PINNED)["sensors.yaml"]:
        data = {f["path"]: f for f in sensor["spec"]["dependencies"][0]["filters"]["data"]}
        (regex,) = data["body.repository.full_name"]["value"]
        regexes.append(regex)
    listener = triggers_tekton.event_listener(PINNED)
    for trig in listener["spec"]["triggers"]:
        if trig["name"].startswith("schedule-"):
            continue  # pinned: the template names the repository, the event cannot
        expr = trig["interceptors"][1]["params"][0]["value"]
        field = (
            "body.project.path_with_namespace"
            if "gitlab" in trig["name"]
            else ("body.repository.full_name")
        )
        m = re.search(re.escape(field) + r"\.matches\(r'([^']*)'\)", expr)
        assert m, expr
        regexes.append(m[1])
    assert len(regexes) == 6
    for regex in regexes:
        assert _accepts(regex, "Acme/churn-model") and _accepts(regex, "acme/CHURN-model")
        for other in ("acme/churn-model2", "evil/churn-model", "xacme/churn-model", "acme"):
            assert not _accepts(regex, other), (regex, other)
    assert repo_path("git@github.com:acme/churn-model.git") == "acme/churn-model"
    with pytest.raises(RenderError, match="owner/name"):
        repo_path("https://github.com/")


# -- credentials workspaces ------------------------------------------------------------------


def test_optional_workspaces_are_bound_to_the_argo_secrets() -> None:
    """Tekton binds the same Secrets the WorkflowTemplates mount, optional on both engines."""
    argo_docs = {
        d["metadata"]["name"]: d
        for text in argo_files.files().values()
        for d in yaml.safe_load_all(text)
        if d and d["kind"] == "WorkflowTemplate"
    }
    for plan in (DEFAULT, PINNED):
        for t in triggers_tekton.objects(plan)["templates.yaml"]:
            (run,) = t["spec"]["resourcetemplates"]
            pipeline = run["spec"]["pipelineRef"]["name"]
            bound = {w["name"]: w["secret"] for w in run["spec"]["workspaces"] if "secret" in w}
            optional = {w.name for w in PIPELINES[pipeline].workspaces if w.optional}
            assert set(bound) == optional and optional, pipeline
            volumes = {v["name"]: v["secret"] for v in argo_docs[pipeline]["spec"]["volumes"]}
            for ws, secret in bound.items():
                assert secret == {"secretName": volumes[ws]["secretName"], "optional": True}
                assert volumes[ws]["optional"] is True


# -- the Argo schedule: one mechanism (finding 7b) -------------------------------------------


def _installed(command: str) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k DIR`` / ``-f PATH`` sends (kustomizations resolved)."""
    words = command.split()
    out: list[dict[str, Any]] = []

    def kustomization(folder: Path) -> None:
        k = yaml.safe_load((folder / "kustomization.yaml").read_text())
        for res in k["resources"]:
            target = (folder / res).resolve()
            if target.is_dir():
                kustomization(target)
            else:
                out.extend(d for d in yaml.safe_load_all(target.read_text()) if d)

    for flag, arg in itertools.pairwise(words):
        if flag == "-k":
            kustomization(ROOT / arg)
        elif flag == "-f":
            target = ROOT / arg
            files = sorted(target.glob("*.yaml")) if target.is_dir() else [target]
            for f in files:
                assert f.name != "kustomization.yaml", f"`{command}` sends a Kustomization"
                out.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    return out


def _argo_install_commands() -> list[str]:
    text = (ROOT / "docs" / "triggers.md").read_text()
    section = text.split("## Cluster: Argo Events", 1)[1].split("\n## ", 1)[0]
    return [
        line.split("#")[0].strip()
        for line in section.splitlines()
        if line.startswith("kubectl") and " apply " in line
    ]


def _scheduled_retrains(objs: list[dict[str, Any]]) -> int:
    crons = sum(
        1
        for d in objs
        if d["kind"] == "CronWorkflow"
        and d["spec"]["workflowSpec"]["workflowTemplateRef"]["name"] == "retrain"
    )
    calendars = sum(len(d["spec"].get("calendar", {})) for d in objs if d["kind"] == "EventSource")
    return crons + calendars


def test_the_documented_argo_install_schedules_one_retrain() -> None:
    commands = _argo_install_commands()
    assert commands, "docs/triggers.md names no Argo install command"
    objs = [d for c in commands for d in _installed(c)]
    kinds = {d["kind"] for d in objs}
    assert {"WorkflowTemplate", "Sensor", "EventSource"} <= kinds
    assert _scheduled_retrains(objs) == 1
    assert not any(d["kind"] == "EventSource" and "calendar" in d["spec"] for d in objs)


# -- one Workflow per (pipeline, commit), whatever the retries (finding 2) --------------------


def _submitted_name(trigger: dict[str, Any], payload: dict[str, Any]) -> str:
    """The Workflow name argo-events builds (pkg/sensors/triggers/params.go ApplyParams):
    the resource's name, with each ``append`` parameter's value after it."""
    wf = trigger["template"]["argoWorkflow"]
    name = wf["source"]["resource"]["metadata"]["name"]
    for p in wf["parameters"]:
        if p["dest"] != "metadata.name":
            continue
        assert p["operation"] == "append"
        m = re.fullmatch(
            r"\{\{ \.Input\.([\w.]+) \| lower \| trunc (\d+) \}\}", p["src"]["dataTemplate"]
        )
        assert m, p
        value: Any = payload
        for key in m[1].split("."):
            value = value[key]
        name += value.lower()[: int(m[2])]
    return name


@pytest.mark.parametrize("plan", PLANS, ids=PLAN_IDS)
def test_a_retried_or_redelivered_push_submits_nothing_new(plan: Plan) -> None:
    sha, other = "A" * 40, "b" * 64
    for sensor in triggers_argo.objects(plan)["sensors.yaml"]:
        if sensor["spec"]["dependencies"][0]["eventSourceName"] == triggers_argo.ALERT_SOURCE:
            continue  # named per firing episode: test_alert_triggers_on_both_engines
        (trigger,) = sensor["spec"]["triggers"]
        meta = trigger["template"]["argoWorkflow"]["source"]["resource"]["metadata"]
        assert "generateName" not in meta  # a retry would create a second Workflow
        first = _submitted_name(trigger, {"body": {"after": sha}})
        assert first == _submitted_name(trigger, {"body": {"after": sha}})
        assert first != _submitted_name(trigger, {"body": {"after": other}})
        assert len(_submitted_name(trigger, {"body": {"after": other}})) <= 63
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", first), first
    assert triggers_argo.sha_length("train-eval-deploy-gpu") == 40
    with pytest.raises(RenderError, match="name too long"):
        triggers_argo.sha_length("p" * 55)


# -- the drift alert (Alertmanager's webhook) -----------------------------------------------


def _alert_name(template: str, alert: dict[str, str]) -> str:
    """The two sprig pipelines the alert sensor's name uses, evaluated as Go would."""
    import hashlib

    out = ""
    for literal, expr in re.findall(r"([^{]*)\{\{ ([^}]*) \}\}", template):
        field, *steps = [s.strip() for s in expr.split("|")]
        m = re.fullmatch(r"\(index \.Input\.body\.alerts 0\)\.(\w+)", field)
        assert m, field
        value = alert[m[1]]
        for step in steps:
            if step == "lower":
                value = value.lower()
            elif step == "sha1sum":
                value = hashlib.sha1(value.encode()).hexdigest()
            else:
                n = re.fullmatch(r"trunc (\d+)", step)
                assert n, step
                value = value[: int(n[1])]
        out += literal + value
    return out


def test_alert_triggers_on_both_engines() -> None:
    from taskyard.render._triggers import ALERT_SECRET_KEY, ALERT_SECRET_NAME, DRIFT_ALERT

    (alert,) = DEFAULT.alerts
    assert alert.pipeline == "drift-retrain" and alert.alertname == DRIFT_ALERT
    # Tekton: one CEL interceptor, the bearer token first (compareSecret), then the payload.
    listener = triggers_tekton.event_listener()
    trig = next(t for t in listener["spec"]["triggers"] if t["name"] == "alert-model-drift")
    (cel,) = trig["interceptors"]
    params = {p["name"]: p["value"] for p in cel["params"]}
    expr = params["filter"]
    assert f"compareSecret('{ALERT_SECRET_KEY}', '{ALERT_SECRET_NAME}')" in expr
    assert "body.version == '4'" in expr and "body.alerts[0].status == 'firing'" in expr
    assert f"body.alerts[0].labels.alertname == '{DRIFT_ALERT}'" in expr
    (overlay,) = params["overlays"]
    assert overlay["key"] == "current" and "/monitoring/window'" in overlay["expression"]
    (instance_re,) = re.findall(r"matches\(r'([^']*)'\)", expr)
    for ok in ("127.0.0.1:8080", "10.0.3.7:8080", "model.taskyard.svc:8080", "[::1]:8080"):
        assert re.search(instance_re, ok), ok
    for bad in ("127.0.0.1:8080/x?y", "evil.example/a:1", "-x:1", "host", "a b:1"):
        assert not re.search(instance_re, bad), bad
    binding = next(
        b
        for b in triggers_tekton.bindings()
        if b["metadata"]["name"] == "taskyard-alert-model-drift"
    )
    values = {p["name"]: p["value"] for p in binding["spec"]["params"]}
    assert values == {
        "repo-url": CATALOG.repo_url,
        "revision": "main",
        "current": "$(extensions.current)",
    }
    template = next(
        t
        for t in _docs(triggers_tekton.files())
        if t["metadata"]["name"] == "taskyard-drift-retrain"
    )
    run_params = template["spec"]["resourcetemplates"][0]["spec"]["params"]
    assert {"name": "current", "value": "$(tt.params.current)"} in run_params

    # Argo Events: a webhook EventSource with the bearer token, a Sensor per alert trigger.
    objects = triggers_argo.objects()
    source = next(
        s
        for s in objects["eventsources.yaml"]
        if s["metadata"]["name"] == triggers_argo.ALERT_SOURCE
    )
    hook = source["spec"]["webhook"][triggers_argo.ALERT_EVENT]
    assert hook["authSecret"] == {"name": ALERT_SECRET_NAME, "key": ALERT_SECRET_KEY}
    sensor = next(
        s for s in objects["sensors.yaml"] if s["metadata"]["name"] == "taskyard-alert-model-drift"
    )
    data = {f["path"]: f["value"] for f in sensor["spec"]["dependencies"][0]["filters"]["data"]}
    assert data["body.alerts.0.labels.alertname"] == [f"^{DRIFT_ALERT}$"]
    assert data["body.alerts.0.status"] == ["^firing$"] and data["body.version"] == ["^4$"]
    assert re.search(data["body.alerts.0.labels.instance"][0], "10.0.3.7:8080")
    (trigger,) = sensor["spec"]["triggers"]
    wf = trigger["template"]["argoWorkflow"]
    args = wf["source"]["resource"]["spec"]["arguments"]["parameters"]
    assert args[2]["name"] == "current"
    dest = {p["dest"]: p["src"]["dataTemplate"] for p in wf["parameters"]}
    assert dest["spec.arguments.parameters.2.value"] == (
        "http://{{ (index .Input.body.alerts 0).labels.instance }}/monitoring/window"
    )
    # One Workflow per firing episode: a repeat or retry of the same alert meets AlreadyExists.
    episode = {"fingerprint": "A1B2C3D4E5F60718", "startsAt": "2026-12-02T14:00:05.123Z"}
    name = wf["source"]["resource"]["metadata"]["name"] + _alert_name(
        dest["metadata.name"], episode
    )
    assert name == wf["source"]["resource"]["metadata"]["name"] + _alert_name(
        dest["metadata.name"], dict(episode)
    )
    later = _alert_name(dest["metadata.name"], {**episode, "startsAt": "2026-12-02T18:00:00Z"})
    assert not name.endswith(later)
    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
