"""The namespace pipelines run in: PodSecurity, ServiceAccounts per task kind, quotas, policies.

Pure functions (:class:`NamespaceOptions` -> list of dicts) and :func:`files`, no I/O.

- PodSecurity: the ``pod-security.kubernetes.io/{enforce,audit,warn}`` namespace labels
  (https://kubernetes.io/docs/concepts/security/pod-security-admission/), all ``restricted``;
  the rendered Task/Workflow pods already run non-root with ``seccompProfile: RuntimeDefault``.
- RBAC: one ServiceAccount per task kind (:mod:`taskyard.render.accounts`: the same map the
  Tekton and Argo renders run each task's pods as). Only ``taskyard-deploy`` calls the API
  server, so it alone mounts a token and has a Role: Deployments, Services and KServe
  InferenceServices in this namespace only (a Role, never a ClusterRole). The verbs are what a
  server-side-apply rollout needs: server-side apply is a ``PATCH`` with
  ``application/apply-patch+yaml``
  (https://kubernetes.io/docs/reference/using-api/server-side-apply/), creating the object when
  absent, so ``patch`` (and ``create``) is required; ``get``/``list``/``watch`` to
  wait for the rollout; ``update``/``delete`` for the rollback and removing a canary.
- Quota: a ResourceQuota with ``requests.nvidia.com/gpu`` (extended resources are quota'd only
  as ``requests.<name>``, https://kubernetes.io/docs/concepts/policy/resource-quotas/ "Resource
  quota for extended resources") and a LimitRange giving containers default requests/limits
  (a quota on cpu/memory makes a pod without them be refused otherwise).
- Network: ingress denied by default; model servers (``app.kubernetes.io/component:
  model-server``) reachable from any pod of the namespace on their port; MLflow
  (``app.kubernetes.io/name: mlflow``) only from taskyard's pods: those labelled
  ``app.kubernetes.io/part-of: taskyard`` (:data:`PIPELINE_PEERS`, the default). The label
  reaches every pipeline pod: on Tekton it is on every rendered Pipeline and Task, and Tekton
  copies Pipeline labels to the PipelineRun (pkg/reconciler/pipelinerun/pipelinerun.go
  ``storePipelineSpecAndMergeMeta``), PipelineRun labels to each TaskRun
  (``createChildResourceLabels``, ``combineTaskRunAndTaskSpecLabels``) and TaskRun labels to
  its pod (pkg/pod/pod.go ``makeLabels``; docs/labels.md "Label propagation"); on Argo it is
  in each WorkflowTemplate's ``spec.podMetadata.labels``, which the controller copies onto
  every pod (argo-workflows v4.1.2 workflow/controller/workflowpod.go ``addMetadata``; the
  WorkflowTemplate's own ``metadata.labels`` are not copied), and a Workflow that runs the
  template by ``workflowTemplateRef`` (the CronWorkflow, the Sensors) gets it through the
  merged spec (workflow/util/merge.go ``JoinWorkflowSpec``). Other pods of the namespace
  carrying the label (taskyard's own CronJob poster, model servers) are let in too.
  The alternative, :data:`ENGINE_PEERS`: the labels each engine itself puts on every pod it
  creates, whatever our renders say -- Tekton ``tekton.dev/taskRun`` (pkg/pod/pod.go
  ``makeLabels``), Argo ``workflows.argoproj.io/workflow`` (workflowpod.go) -- which admits
  every Tekton/Argo pipeline pod of the namespace, taskyard's or not; pass it as
  ``NamespaceOptions(pipeline_peers=ENGINE_PEERS)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskyard.render import accounts, yamlfmt
from taskyard.render.emit import HEADER

PART_OF = accounts.PART_OF
DEPLOY_ACCOUNT = accounts.DEPLOY_ACCOUNT
# Task kind -> ServiceAccount; ml covers run-tests/train/train-gpu/evaluate/promote (only MLflow).
ACCOUNTS: Mapping[str, str] = accounts.ACCOUNTS
ML_TASKS = accounts.tasks_of(accounts.ML)
DEPLOY_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
DEPLOY_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": list(DEPLOY_VERBS)},
    {"apiGroups": [""], "resources": ["services"], "verbs": list(DEPLOY_VERBS)},
    {
        "apiGroups": ["serving.kserve.io"],
        "resources": ["inferenceservices"],
        "verbs": list(DEPLOY_VERBS),
    },
)
# taskyard's pods: the label the renders put on every pipeline pod (module docstring).
PIPELINE_PEERS: tuple[dict[str, Any], ...] = (
    {"podSelector": {"matchLabels": {accounts.PART_OF_KEY: accounts.PART_OF}}},
)
# The alternative: the labels each engine itself sets on every pod it creates (any pipeline).
ENGINE_PEERS: tuple[dict[str, Any], ...] = (
    {"podSelector": {"matchExpressions": [{"key": "tekton.dev/taskRun", "operator": "Exists"}]}},
    {
        "podSelector": {
            "matchExpressions": [{"key": "workflows.argoproj.io/workflow", "operator": "Exists"}]
        }
    },
)


@dataclass(frozen=True)
class NamespaceOptions:
    namespace: str = "taskyard"
    pod_security: str = "restricted"
    gpu_quota: int = 1
    requests_cpu: str = "16"
    requests_memory: str = "64Gi"
    limits_cpu: str = "32"
    limits_memory: str = "128Gi"
    pods: int = 50
    pvcs: int = 20
    storage: str = "200Gi"
    default_cpu_request: str = "250m"
    default_memory_request: str = "512Mi"
    default_cpu_limit: str = "2"
    default_memory_limit: str = "4Gi"
    model_server_port: int = 8080
    mlflow_port: int = 5000
    pipeline_peers: tuple[dict[str, Any], ...] = field(default=PIPELINE_PEERS)
    # Where Prometheus runs (kube-prometheus-stack's default): it scrapes the model servers'
    # /metrics from there (docs/monitoring.md); Kubernetes sets this label on every namespace.
    monitoring_namespace: str = "monitoring"


def _meta(name: str, opts: NamespaceOptions, **labels: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": opts.namespace,
        "labels": {"app.kubernetes.io/part-of": PART_OF, **labels},
    }


def namespace(opts: NamespaceOptions) -> list[dict[str, Any]]:
    level = opts.pod_security
    labels = {"app.kubernetes.io/part-of": PART_OF}
    for mode in ("enforce", "audit", "warn"):
        labels[f"pod-security.kubernetes.io/{mode}"] = level
        labels[f"pod-security.kubernetes.io/{mode}-version"] = "latest"
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": opts.namespace, "labels": labels},
        }
    ]


def rbac(opts: NamespaceOptions) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for kind, account in ACCOUNTS.items():
        meta = _meta(account, opts, **{"app.kubernetes.io/component": f"task-{kind}"})
        if kind == "ml":
            meta["annotations"] = {"taskyard.dev/tasks": ",".join(ML_TASKS)}
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": meta,
                "automountServiceAccountToken": kind in accounts.TOKEN_KINDS,
            }
        )
    docs.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(DEPLOY_ACCOUNT, opts),
            "rules": [dict(r, verbs=list(r["verbs"])) for r in DEPLOY_RULES],
        }
    )
    docs.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(DEPLOY_ACCOUNT, opts),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": DEPLOY_ACCOUNT,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": DEPLOY_ACCOUNT, "namespace": opts.namespace}
            ],
        }
    )
    return docs


def quota(opts: NamespaceOptions) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": _meta("taskyard", opts),
            "spec": {
                "hard": {
                    "requests.cpu": opts.requests_cpu,
                    "requests.memory": opts.requests_memory,
                    "limits.cpu": opts.limits_cpu,
                    "limits.memory": opts.limits_memory,
                    "requests.nvidia.com/gpu": str(opts.gpu_quota),
                    "requests.storage": opts.storage,
                    "persistentvolumeclaims": str(opts.pvcs),
                    "pods": str(opts.pods),
                }
            },
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": _meta("taskyard", opts),
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "defaultRequest": {
                            "cpu": opts.default_cpu_request,
                            "memory": opts.default_memory_request,
                        },
                        "default": {
                            "cpu": opts.default_cpu_limit,
                            "memory": opts.default_memory_limit,
                        },
                    }
                ]
            },
        },
    ]


def _policy(name: str, opts: NamespaceOptions, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, opts),
        "spec": spec,
    }


def network(opts: NamespaceOptions) -> list[dict[str, Any]]:
    return [
        _policy("default-deny-ingress", opts, {"podSelector": {}, "policyTypes": ["Ingress"]}),
        _policy(
            "model-server-from-namespace",
            opts,
            {
                "podSelector": {"matchLabels": {"app.kubernetes.io/component": "model-server"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {}}],
                        "ports": [{"protocol": "TCP", "port": opts.model_server_port}],
                    }
                ],
            },
        ),
        _policy(
            "model-server-from-monitoring",
            opts,
            {
                "podSelector": {"matchLabels": {"app.kubernetes.io/component": "model-server"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {
                                        "kubernetes.io/metadata.name": opts.monitoring_namespace
                                    }
                                }
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": opts.model_server_port}],
                    }
                ],
            },
        ),
        _policy(
            "mlflow-from-pipelines",
            opts,
            {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [dict(p) for p in opts.pipeline_peers],
                        "ports": [{"protocol": "TCP", "port": opts.mlflow_port}],
                    }
                ],
            },
        ),
    ]


FOLDER = "deploy/namespace"
PARTS = {"namespace": namespace, "rbac": rbac, "quota": quota, "network": network}


def objects(opts: NamespaceOptions | None = None) -> dict[str, list[dict[str, Any]]]:
    opts = opts or NamespaceOptions()
    return {f"{FOLDER}/{name}.yaml": build(opts) for name, build in PARTS.items()}


def files(opts: NamespaceOptions | None = None) -> dict[str, str]:
    return {
        rel: HEADER + "---\n".join(yamlfmt.dump(d) for d in docs)
        for rel, docs in objects(opts).items()
    }
