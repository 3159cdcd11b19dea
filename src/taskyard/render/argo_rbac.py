"""The Argo executor's ServiceAccount, its token Secret, and the least the executor needs.

The task pods run as their kind's account (:mod:`taskyard.render.accounts`, most with no
token); the executor containers of every pod use this one instead, through the
WorkflowTemplates' ``spec.executor.serviceAccountName`` (:mod:`taskyard.render.argo`). On Argo
>= 3.4 the executor reports a task's outputs (``valueFrom.path`` results) as
``WorkflowTaskResult`` objects. argo-workflows docs/workflow-rbac.md (tag v4.1.2), "The minimum
for the executor to function ... For >= v3.4": ``workflowtaskresults`` ``create`` and ``patch``
in ``argoproj.io``; the same rules as manifests/quick-start/base/executor/emissary/
executor-role.yaml, and the calls workflow/executor/taskresult.go makes (``Create``, then
merge ``Patch``). The steps themselves never call the Kubernetes API, so nothing else is granted;
memoization's ConfigMap cache is written by the controller's own role (docs/memoization.md).

The controller mounts the executor account's token from a Secret it looks up by name,
``<account>.service-account-token`` (util/secrets/secret_name.go ``TokenNameForServiceAccount``,
called from workflow/controller/operator.go ``getServiceAccountTokenName``); since Kubernetes
1.24 no such Secret is made for an account, so it is rendered here, the way
docs/service-account-secrets.md "Option 1 - Discovery By Name" shows (Kubernetes' token
controller fills it in). No pod runs as this account, so it mounts no token itself.
"""

from __future__ import annotations

from typing import Any

import yaml

from taskyard.render.argo import WORKFLOW_SERVICE_ACCOUNT

ROLE = f"{WORKFLOW_SERVICE_ACCOUNT}-executor"
EXECUTOR_RULES: tuple[dict[str, Any], ...] = (
    {
        "apiGroups": ["argoproj.io"],
        "resources": ["workflowtaskresults"],
        "verbs": ["create", "patch"],
    },
)
TOKEN_TYPE = "kubernetes.io/service-account-token"
_LABELS = {"app.kubernetes.io/part-of": "taskyard", "app.kubernetes.io/component": "workflow"}


def _meta(name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = dict(_LABELS)
    return meta


def token_secret(account: str = WORKFLOW_SERVICE_ACCOUNT) -> str:
    """The name Argo finds the executor's token Secret by (util/secrets/secret_name.go)."""
    return f"{account}.service-account-token"


def objects(
    namespace: str | None = None, account: str = WORKFLOW_SERVICE_ACCOUNT
) -> list[dict[str, Any]]:
    """ServiceAccount, its token Secret, Role and RoleBinding (namespaced: apply them where the
    workflows run)."""
    role = f"{account}-executor"
    token = _meta(token_secret(account), namespace)
    token["annotations"] = {"kubernetes.io/service-account.name": account}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(account, namespace),
            "automountServiceAccountToken": False,
        },
        {"apiVersion": "v1", "kind": "Secret", "metadata": token, "type": TOKEN_TYPE},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(role, namespace),
            "rules": [dict(r) for r in EXECUTOR_RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(role, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            # No subject namespace: the binding's own, as argo-workflows' quick-start
            # executor-default-rolebinding.yaml binds `default`.
            "subjects": [
                {"kind": "ServiceAccount", "name": account}
                | ({"namespace": namespace} if namespace else {})
            ],
        },
    ]


def text(namespace: str | None = None) -> str:
    """The objects as one multi-document YAML file (no header)."""
    return yaml.safe_dump_all(objects(namespace), sort_keys=False, width=100)
