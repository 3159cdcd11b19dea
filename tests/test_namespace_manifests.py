"""The namespace manifests (render/namespace.py): valid core kinds, least-privilege RBAC,
the GPU quota, PodSecurity restricted, and which pods may reach MLflow."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from taskyard.render import emit, namespace

kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")

FILES = namespace.files()
DOCS = [d for text in FILES.values() for d in yaml.safe_load_all(text)]
GUARDED = {
    ("apps", "deployments"),
    ("", "services"),
    ("serving.kserve.io", "inferenceservices"),
}


def _kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in DOCS if d["kind"] == kind]


def test_files_are_the_four_with_header_and_dumped_docs() -> None:
    assert set(FILES) == {
        f"deploy/namespace/{n}.yaml" for n in ("namespace", "rbac", "quota", "network")
    }
    for rel, text in FILES.items():
        assert text.startswith(emit.HEADER), rel
        docs = namespace.objects()[rel]
        assert text == emit.HEADER + "---\n".join(namespace.yamlfmt.dump(d) for d in docs)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_object_passes_kubernetes_validate_strict(doc: dict[str, Any]) -> None:
    kv.validate(doc, kv.latest_version(), strict=True)


@pytest.mark.parametrize(
    "kind, plant",
    [
        ("ResourceQuota", lambda d: d["spec"].__setitem__("hrad", d["spec"].pop("hard"))),
        ("NetworkPolicy", lambda d: d["spec"].__setitem__("polcyTypes", ["Ingress"])),
        ("ServiceAccount", lambda d: d.__setitem__("automountServiceAccountTokn", False)),
    ],
)
def test_a_planted_typo_fails_validation(kind: str, plant) -> None:
    doc = copy.deepcopy(_kind(kind)[0])
    plant(doc)
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, kv.latest_version(), strict=True)


def test_only_deploy_can_touch_deployments_services_inferenceservices() -> None:
    roles = {(r["kind"], r["metadata"]["name"]): r for r in _kind("Role") + _kind("ClusterRole")}
    assert not _kind("ClusterRole") and not _kind("ClusterRoleBinding")
    granted: dict[str, set[tuple[str, str]]] = {}
    for b in _kind("RoleBinding") + _kind("ClusterRoleBinding"):
        role = roles[(b["roleRef"]["kind"], b["roleRef"]["name"])]
        assert role["metadata"]["namespace"] == b["metadata"]["namespace"] == "taskyard"
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["apiGroups"] + rule["resources"]
            pairs = {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
            for s in b["subjects"]:
                assert s["kind"] == "ServiceAccount" and s["namespace"] == "taskyard"
                granted.setdefault(s["name"], set()).update(pairs)
    touching = {sa for sa, pairs in granted.items() if pairs & GUARDED}
    assert touching == {namespace.DEPLOY_ACCOUNT}
    assert granted[namespace.DEPLOY_ACCOUNT] == GUARDED
    (role,) = _kind("Role")
    for rule in role["rules"]:  # server-side apply is a PATCH that may create
        assert {"get", "patch", "create"} <= set(rule["verbs"])


def test_one_account_per_task_kind_and_only_deploy_mounts_a_token() -> None:
    accounts = {d["metadata"]["name"]: d for d in _kind("ServiceAccount")}
    assert set(accounts) == set(namespace.ACCOUNTS.values())
    for name, sa in accounts.items():
        assert sa["automountServiceAccountToken"] is (name == namespace.DEPLOY_ACCOUNT)


def test_quota_has_the_gpu_and_limitrange_defaults() -> None:
    (q,) = _kind("ResourceQuota")
    assert q["spec"]["hard"]["requests.nvidia.com/gpu"] == "1"
    opts = namespace.NamespaceOptions(gpu_quota=4)
    q4 = next(d for d in namespace.quota(opts) if d["kind"] == "ResourceQuota")
    assert q4["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"
    (lr,) = _kind("LimitRange")
    (limit,) = lr["spec"]["limits"]
    assert limit["type"] == "Container" and {"cpu", "memory"} <= set(limit["default"])
    assert {"cpu", "memory"} <= set(limit["defaultRequest"])


def test_namespace_enforces_restricted() -> None:
    (ns,) = _kind("Namespace")
    labels = ns["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    other = namespace.namespace(namespace.NamespaceOptions(namespace="ml"))[0]
    assert other["metadata"]["name"] == "ml"


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        assert e["operator"] == "Exists"
        if e["key"] not in labels:
            return False
    return True


def _admits(peer: dict[str, Any], labels: dict[str, str], namespace: str) -> bool:
    """A NetworkPolicy peer: a podSelector alone means the policy's own namespace."""
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": namespace}
        return _selects(peer["namespaceSelector"], ns_labels) and _selects(
            peer.get("podSelector", {}), labels
        )
    return namespace == "taskyard" and _selects(peer["podSelector"], labels)


def _allowed(
    target: dict[str, str], source: dict[str, str], port: int, namespace: str = "taskyard"
) -> bool:
    policies = [p for p in _kind("NetworkPolicy") if _selects(p["spec"]["podSelector"], target)]
    assert any(p["metadata"]["name"] == "default-deny-ingress" for p in policies)
    for p in policies:
        for rule in p["spec"].get("ingress", []):
            ports = {x["port"] for x in rule.get("ports", [])}
            if port in ports and any(_admits(f, source, namespace) for f in rule["from"]):
                return True
    return False


# What the engines put on their pods (Tekton pkg/pod/pod.go makeLabels, Argo workflowpod.go),
# plus the part-of label the renders carry there (Tekton: Pipeline/Task labels, docs/labels.md;
# Argo: spec.podMetadata, workflowpod.go addMetadata).
PART_OF = {"app.kubernetes.io/part-of": "taskyard"}
TEKTON_POD = {
    "tekton.dev/taskRun": "train-run-abc",
    "app.kubernetes.io/managed-by": "tekton",
    **PART_OF,
}
ARGO_POD = {"workflows.argoproj.io/workflow": "train-xyz", **PART_OF}
OTHER_POD = {"app": "notebook"}
# Another team's pipeline pods in the namespace: the engine labels, not ours.
FOREIGN_TEKTON_POD = {"tekton.dev/taskRun": "etl-run", "app.kubernetes.io/managed-by": "tekton"}
FOREIGN_ARGO_POD = {"workflows.argoproj.io/workflow": "etl-xyz"}
MLFLOW = {"app.kubernetes.io/name": "mlflow"}
SERVER = {"app.kubernetes.io/component": "model-server"}


def test_network_policies() -> None:
    for src in (TEKTON_POD, ARGO_POD):
        assert _allowed(MLFLOW, src, 5000)
    assert not _allowed(MLFLOW, OTHER_POD, 5000)
    assert not _allowed(MLFLOW, FOREIGN_TEKTON_POD, 5000)
    assert not _allowed(MLFLOW, FOREIGN_ARGO_POD, 5000)
    assert not _allowed(MLFLOW, TEKTON_POD, 22)
    for src in (TEKTON_POD, ARGO_POD, OTHER_POD):
        assert _allowed(SERVER, src, 8080)
    assert not _allowed(SERVER, OTHER_POD, 9090)
    assert not _allowed({"app": "db"}, TEKTON_POD, 5432)
    # Prometheus scrapes the model servers from its namespace, and reaches nothing else.
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    assert _allowed(SERVER, prometheus, 8080, namespace="monitoring")
    assert not _allowed(SERVER, prometheus, 8080, namespace="elsewhere")
    assert not _allowed(MLFLOW, prometheus, 5000, namespace="monitoring")
    assert not _allowed(SERVER, prometheus, 9090, namespace="monitoring")
    for p in _kind("NetworkPolicy"):  # no other rule lets another namespace in
        for rule in p["spec"].get("ingress", []):
            if p["metadata"]["name"] != "model-server-from-monitoring":
                assert all(set(f) == {"podSelector"} for f in rule["from"])


def test_the_engine_label_peers_are_the_documented_alternative() -> None:
    opts = namespace.NamespaceOptions(pipeline_peers=namespace.ENGINE_PEERS)
    policy = next(
        p for p in namespace.network(opts) if p["metadata"]["name"] == "mlflow-from-pipelines"
    )
    (rule,) = policy["spec"]["ingress"]
    for src in (FOREIGN_TEKTON_POD, FOREIGN_ARGO_POD):  # any pipeline pod of the namespace
        assert any(_selects(f["podSelector"], src) for f in rule["from"])
    assert not any(_selects(f["podSelector"], OTHER_POD) for f in rule["from"])
    assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
