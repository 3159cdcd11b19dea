"""Least privilege, proven from every committed render: what each ServiceAccount may do is what
its task needs (the table below, a reason per verb), and every pipeline pod runs as one of them.

Read from the files on disk (every YAML under the render output folders), not from the
renderers: what a cluster would get. The engine facts are cited where they are used.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskyard.render import accounts, argo, argo_files, emit, triggers_argo, triggers_tekton

ROOT = Path(__file__).resolve().parents[1]
# Where `taskyard render` writes (test_render_folders_are_the_render_outputs keeps it true).
RENDER_FOLDERS = ("tasks", "pipelines", "resolver", "hera", "triggers", "deploy")
RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")


def _load() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for folder in RENDER_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".yaml", ".yml") or not path.is_file():
                continue
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and "kind" in doc:
                    out.append((str(path.relative_to(ROOT)), doc))
    return out


DOCS = _load()


def _kind(*kinds: str) -> list[tuple[str, dict[str, Any]]]:
    return [(rel, d) for rel, d in DOCS if d["kind"] in kinds]


# ---- the table: per ServiceAccount, (apiGroup, resource, verb) -> why its task needs it --------
def _workload(group: str, resource: str) -> dict[tuple[str, str, str], str]:
    why = {
        # https://kubernetes.io/docs/reference/using-api/server-side-apply/
        "patch": "server-side apply is a PATCH (application/apply-patch+yaml)",
        "create": "server-side apply creates the object when it does not exist yet",
        "get": "the rollout wait reads the object and its status",
        "list": "the rollout wait: a watch starts from a list",
        "watch": "the rollout wait follows the object until it is available",
        "update": "the rollback writes the previous spec back",
        "delete": "removing a canary (and the rollback of a new one)",
    }
    return {(group, resource, verb): reason for verb, reason in why.items()}


NEEDS: dict[str, dict[tuple[str, str, str], str]] = {
    # The deploy step (render/namespace.py): a Deployment + Service, or a KServe InferenceService.
    accounts.DEPLOY_ACCOUNT: {
        **_workload("apps", "deployments"),
        **_workload("", "services"),
        **_workload("serving.kserve.io", "inferenceservices"),
    },
    # The Argo executor (render/argo_rbac.py): argo-workflows v4.1.2 docs/workflow-rbac.md "The
    # minimum for the executor to function ... For >= v3.4"; workflow/executor/taskresult.go.
    argo.WORKFLOW_SERVICE_ACCOUNT: {
        ("argoproj.io", "workflowtaskresults", "create"): "the executor creates a task's results",
        ("argoproj.io", "workflowtaskresults", "patch"): "then merge-patches them (taskresult.go)",
    },
    # The Argo Events sensor's `argo submit` (render/triggers_argo.py SENSOR_RULES).
    triggers_argo.SENSOR_ACCOUNT: {
        ("argoproj.io", "workflows", "create"): "argo submit: CreateWorkflow",
        ("argoproj.io", "workflows", "list"): "the sensor lists the Workflow it labelled",
        ("argoproj.io", "workflowtemplates", "get"): "CreateWorkflow reads workflowTemplateRef",
    },
}
# Roles Tekton Triggers installs itself, bound for the listener, never copied (tektoncd/triggers
# docs/eventlisteners.md "Specifying the Kubernetes service account": a RoleBinding with
# tekton-triggers-eventlistener-roles, a ClusterRoleBinding with
# tekton-triggers-eventlistener-clusterroles; rules in config/200-clusterrole.yaml,
# examples/rbac.yaml). (binding kind, ClusterRole) -> the one account bound.
UPSTREAM: dict[tuple[str, str], str] = {
    ("RoleBinding", triggers_tekton.LISTENER_ROLES): triggers_tekton.ACCOUNT,
    ("ClusterRoleBinding", triggers_tekton.LISTENER_CLUSTER_ROLES): triggers_tekton.ACCOUNT,
}
TOKENLESS = [accounts.ACCOUNTS[k] for k in accounts.ACCOUNTS if k not in accounts.TOKEN_KINDS]


def test_render_folders_are_the_render_outputs() -> None:
    assert {rel.split("/")[0] for rel in emit.rendered()} <= set(RENDER_FOLDERS)
    assert _kind("ServiceAccount") and _kind("Role") and _kind("RoleBinding")


def _rules() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for rel, role in _kind("Role", "ClusterRole"):
        for rule in role.get("rules", []):
            yield rel, role, rule


def test_no_wildcard_and_no_non_resource_rule_anywhere() -> None:
    for rel, role, rule in _rules():
        where = (rel, role["metadata"]["name"])
        for key in ("verbs", "resources", "apiGroups"):
            assert "*" not in rule.get(key, []), where
            assert all("*" not in x for x in rule.get(key, [])), where  # no "pods/*" either
        assert "nonResourceURLs" not in rule, where


def test_no_cluster_role_and_only_the_upstream_cluster_bindings() -> None:
    assert _kind("ClusterRole") == []  # every rule we write is namespaced (a Role)
    for rel, b in _kind("RoleBinding", "ClusterRoleBinding"):
        ref = b["roleRef"]
        if b["kind"] == "ClusterRoleBinding" or ref["kind"] == "ClusterRole":
            assert (b["kind"], ref["name"]) in UPSTREAM, (rel, b["metadata"]["name"])
            names = [s["name"] for s in b["subjects"]]
            assert names == [UPSTREAM[(b["kind"], ref["name"])]], rel
    bound = {
        (b["kind"], b["roleRef"]["name"]) for _, b in _kind("RoleBinding", "ClusterRoleBinding")
    }
    assert set(UPSTREAM) <= bound  # the listener needs both (docs/eventlisteners.md)


def _role(rel: str, binding: dict[str, Any]) -> dict[str, Any]:
    """The Role a RoleBinding names: same name, same namespace (a RoleBinding's Role is in the
    binding's own namespace; unset in both: wherever the file is applied)."""
    ns = binding["metadata"].get("namespace")
    found = [
        r
        for _, r in _kind("Role")
        if r["metadata"]["name"] == binding["roleRef"]["name"]
        and r["metadata"].get("namespace") == ns
    ]
    assert len(found) == 1, (rel, binding["metadata"]["name"], len(found))
    return found[0]


def _granted() -> dict[str, set[tuple[str, str, str]]]:
    out: dict[str, set[tuple[str, str, str]]] = {}
    for rel, b in _kind("RoleBinding"):
        if b["roleRef"]["kind"] != "Role":
            continue
        role = _role(rel, b)
        grants = {
            (g, r, v)
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }
        for s in b["subjects"]:
            assert s["kind"] == "ServiceAccount", rel
            ns = s.get("namespace", b["metadata"].get("namespace"))
            assert ns == b["metadata"].get("namespace"), (rel, "a subject in another namespace")
            out.setdefault(s["name"], set()).update(grants)
    return out


def test_every_role_grants_exactly_what_the_table_needs() -> None:
    granted = _granted()
    assert set(granted) == set(NEEDS)
    for account, grants in granted.items():
        assert grants == set(NEEDS[account]), account
    for account, need in NEEDS.items():
        assert all(reason.strip() for reason in need.values()), account


def _subjects() -> set[str]:
    return {s["name"] for _, b in _kind("RoleBinding", "ClusterRoleBinding") for s in b["subjects"]}


@pytest.mark.parametrize("account", TOKENLESS)
def test_clone_ml_report_have_no_binding_and_no_token(account: str) -> None:
    (sa,) = [d for rel, d in _kind("ServiceAccount") if d["metadata"]["name"] == account]
    assert sa["automountServiceAccountToken"] is False
    assert account not in _subjects()


def test_only_the_table_and_the_listener_are_bound_and_the_rest_mount_no_token() -> None:
    bound = _subjects()
    assert bound == set(NEEDS) | set(UPSTREAM.values())
    by_name = {d["metadata"]["name"]: d for _, d in _kind("ServiceAccount")}
    assert by_name[accounts.DEPLOY_ACCOUNT]["automountServiceAccountToken"] is True
    # The executor's account lends its token to executor containers only (argo_rbac.py).
    assert by_name[argo.WORKFLOW_SERVICE_ACCOUNT]["automountServiceAccountToken"] is False
    for name, sa in by_name.items():
        if name not in bound:
            assert sa.get("automountServiceAccountToken") is False, name


# ---- every pipeline pod runs as an account that exists -------------------------------------------
NAMESPACE_ACCOUNTS = {
    d["metadata"]["name"]
    for rel, d in _kind("ServiceAccount")
    if rel == "deploy/namespace/rbac.yaml"
}
HERA_ACCOUNTS = {
    d["metadata"]["name"] for rel, d in _kind("ServiceAccount") if rel == argo_files.RBAC
}


def _pipelines() -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d for rel, d in _kind("Pipeline") if rel.startswith("pipelines/")
    }


def _pipeline_runs() -> list[tuple[str, dict[str, Any]]]:
    runs = [(rel, d) for rel, d in _kind("PipelineRun")]
    for rel, t in _kind("TriggerTemplate"):
        runs += [(rel, r) for r in t["spec"]["resourcetemplates"] if r["kind"] == "PipelineRun"]
    return runs


def test_the_account_files_define_the_task_kinds_and_the_executor() -> None:
    assert set(accounts.ACCOUNTS.values()) == NAMESPACE_ACCOUNTS
    assert argo.WORKFLOW_SERVICE_ACCOUNT in HERA_ACCOUNTS


def test_every_tekton_pipeline_task_runs_as_its_kinds_account() -> None:
    """taskRunSpecs[].serviceAccountName over taskRunTemplate.serviceAccountName
    (tektoncd/pipeline pkg/apis/pipeline/v1/pipelinerun_types.go GetTaskRunSpec)."""
    pipelines = _pipelines()
    runs = _pipeline_runs()
    assert {r["spec"]["pipelineRef"]["name"] for _, r in runs} == set(pipelines)
    for rel, run in runs:
        spec = run["spec"]
        default = spec["taskRunTemplate"]["serviceAccountName"]
        per_task = {s["pipelineTaskName"]: s for s in spec.get("taskRunSpecs", [])}
        p = pipelines[spec["pipelineRef"]["name"]]
        tasks = [*p["spec"]["tasks"], *p["spec"].get("finally", [])]
        assert set(per_task) <= {t["name"] for t in tasks}, rel  # else InvalidTaskRunSpecs
        for t in tasks:
            account = per_task.get(t["name"], {}).get("serviceAccountName", default)
            assert account in NAMESPACE_ACCOUNTS, (rel, t["name"])
            assert account == accounts.account_of(t["taskRef"]["name"]), (rel, t["name"])
    for rel, tr in _kind("TaskRun"):
        account = tr["spec"]["serviceAccountName"]
        assert account == accounts.account_of(tr["spec"]["taskRef"]["name"]), rel
        assert account in NAMESPACE_ACCOUNTS, rel


def test_every_tekton_pipeline_and_task_carries_the_part_of_label() -> None:
    """Copied to every TaskRun pod (docs/labels.md), where the MLflow NetworkPolicy reads it."""
    for rel, d in _kind("Pipeline", "Task"):
        assert d["metadata"]["labels"][accounts.PART_OF_KEY] == accounts.PART_OF, rel


def _workflow_templates() -> list[tuple[str, dict[str, Any]]]:
    return _kind("WorkflowTemplate", "ClusterWorkflowTemplate")


def test_every_argo_pod_runs_as_its_kinds_account_with_the_executors_token() -> None:
    """A template's serviceAccountName over the workflow's; the executor's token comes from
    executor.serviceAccountName, required when automountServiceAccountToken is false
    (argo-workflows v4.1.2 workflow/controller/workflowpod.go setupServiceAccount)."""
    templates = _workflow_templates()
    assert {rel for rel, _ in templates} >= {f"hera/{n}.yaml" for n in _pipelines()}
    for rel, wt in templates:
        spec = wt["spec"]
        assert spec["executor"] == {"serviceAccountName": argo.WORKFLOW_SERVICE_ACCOUNT}, rel
        assert spec["podMetadata"]["labels"][accounts.PART_OF_KEY] == accounts.PART_OF, rel
        assert spec["serviceAccountName"] in NAMESPACE_ACCOUNTS, rel
        containers = [t for t in spec["templates"] if "container" in t]
        assert containers, rel
        for t in containers:
            task = t["metadata"]["labels"][argo.TASK_LABEL]
            account = t.get("serviceAccountName", spec["serviceAccountName"])
            assert account == accounts.account_of(task) and account in NAMESPACE_ACCOUNTS
            token = t.get("automountServiceAccountToken", spec.get("automountServiceAccountToken"))
            assert (token is not False) == accounts.mounts_token(task), (rel, t["name"])


def test_workflows_by_reference_take_the_templates_accounts() -> None:
    """A Workflow with workflowTemplateRef runs its spec merged over the template's
    (workflow/util/merge.go JoinWorkflowSpec): setting none of these keeps the template's."""
    names = {d["metadata"]["name"] for rel, d in _kind("WorkflowTemplate")}
    wfs = [(rel, d["spec"]["workflowSpec"]) for rel, d in _kind("CronWorkflow")]
    for rel, sensor in _kind("Sensor"):
        for trig in sensor["spec"]["triggers"]:
            wfs.append((rel, trig["template"]["argoWorkflow"]["source"]["resource"]["spec"]))
    assert wfs
    for rel, spec in wfs:
        assert spec["workflowTemplateRef"]["name"] in names, rel
        keys = ("serviceAccountName", "executor", "automountServiceAccountToken", "podMetadata")
        assert not set(keys) & set(spec), rel


def _planted(kind: str, name: str, change) -> list[tuple[str, dict[str, Any]]]:
    import copy

    docs = copy.deepcopy(DOCS)
    (doc,) = [d for _, d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    change(doc)
    return docs


@pytest.mark.parametrize(
    ("kind", "name", "change", "check"),
    [
        ("Role", accounts.DEPLOY_ACCOUNT, lambda d: d["rules"][0]["verbs"].append("*"),
         test_no_wildcard_and_no_non_resource_rule_anywhere),
        ("Role", accounts.DEPLOY_ACCOUNT, lambda d: d["rules"][1]["resources"].append("secrets"),
         test_every_role_grants_exactly_what_the_table_needs),
        ("RoleBinding", accounts.DEPLOY_ACCOUNT,
         lambda d: d["subjects"].append({"kind": "ServiceAccount", "name": "taskyard-ml",
                                         "namespace": "taskyard"}),
         test_only_the_table_and_the_listener_are_bound_and_the_rest_mount_no_token),
        ("ServiceAccount", "taskyard-report", lambda d: d.update(automountServiceAccountToken=True),
         lambda: test_clone_ml_report_have_no_binding_and_no_token("taskyard-report")),
        ("ClusterRoleBinding", f"{triggers_tekton.ACCOUNT}-cluster",
         lambda d: d["roleRef"].update(name="cluster-admin"),
         test_no_cluster_role_and_only_the_upstream_cluster_bindings),
    ],
)  # fmt: skip
def test_a_planted_grant_fails_its_check(kind, name, change, check, monkeypatch) -> None:
    monkeypatch.setattr(
        __import__(__name__, fromlist=["DOCS"]), "DOCS", _planted(kind, name, change)
    )
    with pytest.raises(AssertionError):
        check()
