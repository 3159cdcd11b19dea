"""Tekton Triggers (``triggers.tekton.dev/v1beta1``) for the catalog pipelines.

One EventListener ``taskyard`` with, per push trigger, a GitHub and a GitLab trigger: the
provider's ClusterInterceptor checks authenticity (GitHub: HMAC ``X-Hub-Signature-256`` with
``secretRef``; GitLab: ``X-Gitlab-Token``) and the event type, then a CEL interceptor keeps
pushes to the wanted branches (``body.ref``), drops branch deletes (``deleted`` / an all-zero
``after``) and, if the trigger lists paths, pushes touching none of them. TriggerBindings take
``repo-url`` and ``revision`` (the pushed SHA) from the payload; TriggerTemplates create a
PipelineRun with ``generateName``. Tekton has no cron: a ``batch/v1`` CronJob posts a signed
``taskyard-schedule`` event to the listener (GitHub's HMAC scheme, so the same interceptor
verifies it) and its own binding starts ``retrain`` (and ``drift-retrain``).

Alertmanager's webhook (the drift alert, docs/monitoring.md) reaches the same listener: no
ClusterInterceptor checks a bearer token, so the CEL interceptor does, with Tekton's own
``compareSecret`` (constant time; tektoncd/triggers docs/cel_expressions.md, evaluated by the core
interceptors, which read Secrets under their own ClusterRole, config/200-clusterrole.yaml
``tekton-triggers-core-interceptors``), against the Secret ``taskyard-alertmanager`` key
``token``; the filter keeps version-4 payloads whose first alert fires with the trigger's
``alertname``, and an overlay makes ``current`` = the alerting server's
``http://<instance>/monitoring/window`` (the ``instance`` label checked to be host:port first).

The catalog plan (generic, any repository whose webhook is signed with the secret) takes the
model name and MLflow URI from ONE TriggerBinding, ``taskyard-values``, that every trigger of a
pipeline declaring them binds; the TriggerTemplates declare those params without a default, so
no run falls back to a value nobody set. Optional workspaces are bound to Secrets
(``Values.workspace_secrets``, ``optional: true``).

A plan for a team's own repository (``plan.values.pinned``, :mod:`taskyard.render.project`)
binds only ``revision`` from the event: its TriggerTemplates carry the repository, model name
and MLflow URI as literals, so a signed event can choose a commit but never the repository, and
each push trigger's CEL filter also keeps only that repository's events.

RBAC: the listener's ServiceAccount is bound to the two ClusterRoles Tekton Triggers installs
for listeners (tektoncd/triggers docs/eventlisteners.md "Specifying the Kubernetes service
account", examples/rbac.yaml; rules in config/200-clusterrole.yaml, which already grant
``create`` on pipelineruns), never a hand-written copy that drifts from upstream.

Pure: the plan in, dicts out; :func:`files` gives the committed YAML.
"""

from __future__ import annotations

from typing import Any

from taskyard.render import tekton
from taskyard.render._triggers import (
    ALERT_SECRET_KEY,
    ALERT_SECRET_NAME,
    CLUSTER_VALUES,
    DEFAULT,
    INSTANCE_RE,
    PART_OF,
    SECRET_KEY,
    SECRET_NAME,
    WINDOW_PATH,
    ZERO_SHA,
    AlertTrigger,
    CronTrigger,
    Plan,
    PushTrigger,
    glob_regex,
    repo_regex,
    run_values,
    to_text,
    workspace_secrets,
)
from taskyard.render.values import CATALOG

API = "triggers.tekton.dev/v1beta1"
FOLDER = "triggers/tekton"
LISTENER = "taskyard"
ACCOUNT = "taskyard-triggers"
# Installed by Tekton Triggers (tektoncd/triggers config/200-clusterrole.yaml): a listener's
# namespaced needs (bind with a RoleBinding) and its cluster-wide reads (ClusterRoleBinding).
LISTENER_ROLES = "tekton-triggers-eventlistener-roles"
LISTENER_CLUSTER_ROLES = "tekton-triggers-eventlistener-clusterroles"
VALUES_BINDING = "taskyard-values"
# ClusterRoleBinding subjects need a namespace: the one docs/triggers.md applies these into.
NAMESPACE = CATALOG.namespace
SCHEDULE_EVENT = "taskyard-schedule"
# Tekton names the listener's Service `el-<name>`; it listens on 8080.
LISTENER_URL = f"http://el-{LISTENER}:8080"
CRON_IMAGE = "python:3.11-slim"
# The webhook Secret as a read-only file, not an env var (env leaks into crash dumps and
# `kubectl describe`; checkov CKV_K8S_35).
SECRET_MOUNT = "/etc/taskyard/webhook"
# checkov reads per-object skips from these annotations (docs: "Suppressing/Skipping",
# Kubernetes: `checkov.io/skip#: CHECK_ID=comment`).
CRON_CHECKOV_SKIPS = {
    "checkov.io/skip1": (
        "CKV_K8S_43=python:3.11-slim is a stand-in for the operator's own mirrored copy; a "
        "digest is registry-specific, so set the image (pinned) when you render for your cluster"
    ),
}
NON_ROOT_UID = 65532

PROVIDERS: dict[str, dict[str, Any]] = {
    "github": {
        "event_types": ["push"],
        "repo_url": "$(body.repository.clone_url)",
        "repo_name": "body.repository.full_name",
        # GitHub marks deletes with `deleted: true` (and an all-zero `after`).
        "not_deleted": f"!body.deleted && body.after != '{ZERO_SHA}'",
    },
    "gitlab": {
        "event_types": ["Push Hook"],
        "repo_url": "$(body.project.git_http_url)",
        "repo_name": "body.project.path_with_namespace",
        "not_deleted": f"body.after != '{ZERO_SHA}'",
    },
}

# Posted by the CronJob: a static program, every value from the environment (no templating).
POST_SCHEDULE = """\
import hashlib, hmac, json, os, urllib.request
body = json.dumps({k: os.environ[k.upper()] for k in ("pipeline", "schedule", "repo_url",
                   "revision")}, sort_keys=True).encode()
key = open(os.environ["WEBHOOK_SECRET_FILE"], "rb").read().strip()
sig = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
req = urllib.request.Request(os.environ["LISTENER_URL"], data=body, method="POST", headers={
    "Content-Type": "application/json", "X-GitHub-Event": "taskyard-schedule",
    "X-Hub-Signature-256": sig})
with urllib.request.urlopen(req, timeout=30) as resp:
    print(resp.status, resp.read().decode())
"""


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "labels": {"app.kubernetes.io/part-of": PART_OF}, **extra}


# -- RBAC: the upstream listener roles, bound (docs/eventlisteners.md, examples/rbac.yaml) ----


def _binding_to(kind: str, role: str, subject: dict[str, str]) -> dict[str, Any]:
    suffix = "cluster" if kind == "ClusterRoleBinding" else "namespace"
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": _meta(f"{ACCOUNT}-{suffix}"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [subject],
    }


def rbac(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The listener's account, bound to Tekton Triggers' own roles: those roles already grant
    everything the listener does (read its triggers and config, create PipelineRuns, events)."""
    subject = {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(ACCOUNT)},
        _binding_to("RoleBinding", LISTENER_ROLES, subject),
        _binding_to("ClusterRoleBinding", LISTENER_CLUSTER_ROLES, subject),
    ]


# -- bindings, templates, listener ----------------------------------------------------------


def _binding(name: str, repo_url: str | None, revision: str) -> dict[str, Any]:
    """``repo-url`` (None: pinned in the template, so the event cannot pick it) and ``revision``."""
    params = [{"name": "repo-url", "value": repo_url}] if repo_url is not None else []
    params.append({"name": "revision", "value": revision})
    return {
        "apiVersion": API,
        "kind": "TriggerBinding",
        "metadata": _meta(name),
        "spec": {"params": params},
    }


def bindings(plan: Plan = DEFAULT) -> list[dict[str, Any]]:
    pinned = plan.values.pinned
    out = [
        _binding(f"taskyard-{provider}-push", None if pinned else p["repo_url"], "$(body.after)")
        for provider, p in PROVIDERS.items()
    ]
    schedule_repo = None if pinned else "$(body.repo_url)"
    out.append(_binding("taskyard-schedule", schedule_repo, "$(body.revision)"))
    for alert in plan.alerts:
        out.append(alert_binding(alert, plan))
    if not pinned and _needs_values(plan):
        out.append(values_binding(plan))
    return out


def alert_binding(alert: AlertTrigger, plan: Plan) -> dict[str, Any]:
    """What an alert run gets: the plan's repository (the alert names none) and revision as
    literals, and ``current`` from the CEL overlay."""
    binding = _binding(
        f"taskyard-alert-{alert.name}",
        None if plan.values.pinned else plan.values.repo_url,
        alert.revision,
    )
    binding["spec"]["params"].append({"name": "current", "value": "$(extensions.current)"})
    return binding


def _pipelines(plan: Plan) -> list[str]:
    return sorted(
        {t.pipeline for t in plan.push}
        | {c.pipeline for c in plan.cron}
        | {a.pipeline for a in plan.alerts}
    )


def _takes_current(plan: Plan, pipeline: str) -> bool:
    return any(a.pipeline == pipeline for a in plan.alerts) and "current" in {
        p.name for p in plan.pipeline(pipeline).params
    }


def _values_params(plan: Plan, pipeline: str) -> list[str]:
    """The params a catalog trigger takes from ``taskyard-values`` (pinned: none)."""
    if plan.values.pinned:
        return []
    declared = {p.name for p in plan.pipeline(pipeline).params}
    return [name for name in CLUSTER_VALUES if name in declared]


def _needs_values(plan: Plan) -> bool:
    return any(_values_params(plan, p) for p in _pipelines(plan))


def values_binding(plan: Plan = DEFAULT) -> dict[str, Any]:
    """The one object an operator edits for the catalog triggers: model name and MLflow URI
    (literals: a binding value without ``$(…)`` is passed as written, tektoncd/triggers
    pkg/template/event.go ``applyEventValuesToParams``)."""
    names = sorted({n for p in _pipelines(plan) for n in _values_params(plan, p)})
    values = {n: v for p in _pipelines(plan) for n, v in run_values(plan, p).items() if n in names}
    meta = _meta(VALUES_BINDING)
    meta["annotations"] = {
        "taskyard.dev/edit": (
            "Catalog placeholders: set your model name and MLflow server here, or render for "
            "your repository with `taskyard render --pipeline ... --repo-url ...`."
        )
    }
    return {
        "apiVersion": API,
        "kind": "TriggerBinding",
        "metadata": meta,
        "spec": {"params": [{"name": n, "value": values[n]} for n in names]},
    }


def pipelinerun(pipeline: str, plan: Plan = DEFAULT) -> dict[str, Any]:
    """The PipelineRun for ``pipeline``: the plan's values, revision (and, unless pinned,
    repo-url) from the template's params."""
    run = tekton.pipelinerun_sample(plan.pipeline(pipeline), plan.values)
    params = {p["name"]: p["value"] for p in run["spec"].get("params", [])}
    params.update(run_values(plan, pipeline))
    if not plan.values.pinned:
        params["repo-url"] = "$(tt.params.repo-url)"
    for name in _values_params(plan, pipeline):
        params[name] = f"$(tt.params.{name})"
    params["revision"] = "$(tt.params.revision)"
    if _takes_current(plan, pipeline):
        params["current"] = "$(tt.params.current)"
    run["spec"]["params"] = [{"name": k, "value": v} for k, v in params.items()]
    secrets = workspace_secrets(plan, pipeline)
    if secrets:
        run["spec"]["workspaces"] = [
            *run["spec"].get("workspaces", []),
            *(
                {"name": ws, "secret": {"secretName": name, "optional": True}}
                for ws, name in secrets.items()
            ),
        ]
    run["metadata"]["labels"] = {
        "app.kubernetes.io/part-of": PART_OF,
        "taskyard.dev/pipeline": pipeline,
    }
    return run


def template(pipeline: str, plan: Plan = DEFAULT) -> dict[str, Any]:
    params = [{"name": "revision", "description": "The commit SHA (or branch) to run."}]
    if not plan.values.pinned:
        params.insert(0, {"name": "repo-url", "description": "The repository to clone."})
    params += [
        {"name": n, "description": f"From TriggerBinding {VALUES_BINDING} (no default)."}
        for n in _values_params(plan, pipeline)
    ]
    if _takes_current(plan, pipeline):
        params.append(
            {
                "name": "current",
                "default": "",
                "description": "An alert's model server window; empty (schedules): the data.",
            }
        )
    return {
        "apiVersion": API,
        "kind": "TriggerTemplate",
        "metadata": _meta(f"taskyard-{pipeline}"),
        "spec": {"params": params, "resourcetemplates": [pipelinerun(pipeline, plan)]},
    }


def _interceptor(name: str, ref: str, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "ref": {"name": ref, "kind": "ClusterInterceptor"},
        "params": [{"name": k, "value": v} for k, v in params.items()],
    }


def _secret_ref() -> dict[str, str]:
    return {"secretName": SECRET_NAME, "secretKey": SECRET_KEY}


def cel_filter(provider: str, trigger: PushTrigger, repo_url: str | None = None) -> str:
    """The CEL expression: the repository (when the render is for one), branch glob on
    ``body.ref``, no deletes, optional changed paths."""
    branch = glob_regex(trigger.branches, "refs/heads/")
    expr = f"body.ref.matches(r'{branch}') && {PROVIDERS[provider]['not_deleted']}"
    if repo_url is not None:
        expr = f"{PROVIDERS[provider]['repo_name']}.matches(r'{repo_regex(repo_url)}') && {expr}"
    if trigger.paths:
        path = glob_regex(trigger.paths)
        touched = " || ".join(
            f"c.{kind}.exists(f, f.matches(r'{path}'))" for kind in ("added", "modified", "removed")
        )
        expr += f" && body.commits.exists(c, {touched})"
    return expr


def _bindings(first: str, pipeline: str, plan: Plan) -> list[dict[str, str]]:
    refs = [{"ref": first}]
    if _values_params(plan, pipeline):
        refs.append({"ref": VALUES_BINDING})
    return refs


def _push_trigger(provider: str, trigger: PushTrigger, plan: Plan = DEFAULT) -> dict[str, Any]:
    verify = {"secretRef": _secret_ref(), "eventTypes": PROVIDERS[provider]["event_types"]}
    repo = plan.values.repo_url if plan.values.pinned else None
    return {
        "name": f"{provider}-push-{trigger.pipeline}",
        "interceptors": [
            _interceptor(f"verify-{provider}", provider, verify),
            _interceptor("filter-push", "cel", {"filter": cel_filter(provider, trigger, repo)}),
        ],
        "bindings": _bindings(f"taskyard-{provider}-push", trigger.pipeline, plan),
        "template": {"ref": f"taskyard-{trigger.pipeline}"},
    }


def _cron_trigger(cron: CronTrigger, plan: Plan = DEFAULT) -> dict[str, Any]:
    return {
        "name": f"schedule-{cron.name}",
        "interceptors": [
            _interceptor(
                "verify-signature",
                "github",
                {"secretRef": _secret_ref(), "eventTypes": [SCHEDULE_EVENT]},
            ),
            _interceptor(
                "filter-schedule",
                "cel",
                {"filter": f"body.schedule == '{cron.name}' && body.pipeline == '{cron.pipeline}'"},
            ),
        ],
        "bindings": _bindings("taskyard-schedule", cron.pipeline, plan),
        "template": {"ref": f"taskyard-{cron.pipeline}"},
    }


def alert_filter(alert: AlertTrigger) -> str:
    """Bearer token (compareSecret), Alertmanager's v4 payload, the alert firing by name."""
    auth = "header.canonical('Authorization')"
    first = "body.alerts[0]"
    return (
        f"{auth}.startsWith('Bearer ') && "
        f"{auth}.substring(7).compareSecret('{ALERT_SECRET_KEY}', '{ALERT_SECRET_NAME}') && "
        f"body.version == '4' && size(body.alerts) > 0 && {first}.status == 'firing' && "
        f"{first}.labels.alertname == '{alert.alertname}' && "
        f"{first}.labels.instance.matches(r'{INSTANCE_RE}')"
    )


def _alert_trigger(alert: AlertTrigger, plan: Plan = DEFAULT) -> dict[str, Any]:
    window = f"'http://' + body.alerts[0].labels.instance + '{WINDOW_PATH}'"
    return {
        "name": f"alert-{alert.name}",
        "interceptors": [
            _interceptor(
                "filter-alert",
                "cel",
                {
                    "filter": alert_filter(alert),
                    "overlays": [{"key": "current", "expression": window}],
                },
            ),
        ],
        "bindings": _bindings(f"taskyard-alert-{alert.name}", alert.pipeline, plan),
        "template": {"ref": f"taskyard-{alert.pipeline}"},
    }


def event_listener(plan: Plan = DEFAULT) -> dict[str, Any]:
    triggers = [_push_trigger(prov, t, plan) for t in plan.push for prov in PROVIDERS]
    triggers += [_cron_trigger(c, plan) for c in plan.cron]
    triggers += [_alert_trigger(a, plan) for a in plan.alerts]
    return {
        "apiVersion": API,
        "kind": "EventListener",
        "metadata": _meta(LISTENER),
        "spec": {"serviceAccountName": ACCOUNT, "triggers": triggers},
    }


# -- cron: a CronJob posting a signed event to the listener ---------------------------------


def cron_objects(cron: CronTrigger) -> list[dict[str, Any]]:
    name = f"taskyard-{cron.name}"
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(name),
        "data": {"repo-url": cron.repo_url, "revision": cron.revision},
    }

    def from_config(key: str) -> dict[str, Any]:
        return {"configMapKeyRef": {"name": name, "key": key}}

    container = {
        "name": "post-schedule",
        "image": CRON_IMAGE,
        "command": ["python", "-c", POST_SCHEDULE],
        "env": [
            {"name": "LISTENER_URL", "value": LISTENER_URL},
            {"name": "PIPELINE", "value": cron.pipeline},
            {"name": "SCHEDULE", "value": cron.name},
            {"name": "REPO_URL", "valueFrom": from_config("repo-url")},
            {"name": "REVISION", "valueFrom": from_config("revision")},
            {"name": "WEBHOOK_SECRET_FILE", "value": f"{SECRET_MOUNT}/{SECRET_KEY}"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "volumeMounts": [{"name": "webhook-secret", "mountPath": SECRET_MOUNT, "readOnly": True}],
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"memory": "64Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {**_meta(name), "annotations": dict(CRON_CHECKOV_SKIPS)},
        "spec": {
            "schedule": cron.schedule,
            "timeZone": cron.timezone,
            # Missed while the controller was down: start once, for the latest missed time.
            "startingDeadlineSeconds": 86400,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 3,
                    "template": {
                        "metadata": {"labels": {"app.kubernetes.io/part-of": PART_OF}},
                        "spec": {
                            "restartPolicy": "Never",
                            "automountServiceAccountToken": False,
                            "securityContext": {
                                "runAsNonRoot": True,
                                "runAsUser": NON_ROOT_UID,
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "containers": [container],
                            "volumes": [
                                {
                                    "name": "webhook-secret",
                                    "secret": {
                                        "secretName": SECRET_NAME,
                                        "items": [{"key": SECRET_KEY, "path": SECRET_KEY}],
                                    },
                                }
                            ],
                        },
                    },
                }
            },
        },
    }
    return [config, job]


def objects(plan: Plan = DEFAULT) -> dict[str, list[dict[str, Any]]]:
    """Every object, grouped by the file it is committed in."""
    pipelines = _pipelines(plan)
    out = {
        "rbac.yaml": rbac(plan.values.namespace),
        "bindings.yaml": bindings(plan),
        "templates.yaml": [template(p, plan) for p in pipelines],
        "eventlistener.yaml": [event_listener(plan)],
        "cron.yaml": [obj for c in plan.cron for obj in cron_objects(c)],
    }
    return {name: docs for name, docs in out.items() if docs}


def files(plan: Plan = DEFAULT) -> dict[str, str]:
    return {f"{FOLDER}/{name}": to_text(docs) for name, docs in objects(plan).items()}
