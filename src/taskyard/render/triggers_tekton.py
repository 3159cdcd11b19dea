"""Tekton Triggers (``triggers.tekton.dev/v1beta1``) for the catalog pipelines.

One EventListener ``taskyard`` with, per push trigger, a GitHub and a GitLab trigger: the
provider's ClusterInterceptor checks authenticity (GitHub: HMAC ``X-Hub-Signature-256`` with
``secretRef``; GitLab: ``X-Gitlab-Token``) and the event type, then a CEL interceptor keeps
pushes to the wanted branches (``body.ref``), drops branch deletes (``deleted`` / an all-zero
``after``) and, if the trigger lists paths, pushes touching none of them. TriggerBindings take
``repo-url`` and ``revision`` (the pushed SHA) from the payload; TriggerTemplates create a
PipelineRun with ``generateName``. Tekton has no cron: a ``batch/v1`` CronJob posts a signed
``taskyard-schedule`` event to the listener (GitHub's HMAC scheme, so the same interceptor
verifies it) and its own binding starts ``retrain``.

A plan for a team's own repository (``plan.values.pinned``, :mod:`taskyard.render.project`)
binds only ``revision`` from the event: its TriggerTemplates carry the repository, model name
and MLflow URI as literals, so a signed event can choose a commit but never the repository.

Pure: the plan in, dicts out; :func:`files` gives the committed YAML.
"""

from __future__ import annotations

from typing import Any

from taskyard.render import tekton
from taskyard.render._triggers import (
    DEFAULT,
    PART_OF,
    SECRET_KEY,
    SECRET_NAME,
    ZERO_SHA,
    CronTrigger,
    Plan,
    PushTrigger,
    glob_regex,
    to_text,
)
from taskyard.render.values import CATALOG

API = "triggers.tekton.dev/v1beta1"
FOLDER = "triggers/tekton"
LISTENER = "taskyard"
ACCOUNT = "taskyard-triggers"
# ClusterRoleBinding subjects need a namespace: the one docs/triggers.md applies these into.
NAMESPACE = CATALOG.namespace
SCHEDULE_EVENT = "taskyard-schedule"
# Tekton names the listener's Service `el-<name>`; it listens on 8080.
LISTENER_URL = f"http://el-{LISTENER}:8080"
CRON_IMAGE = "python:3.11-slim"
NON_ROOT_UID = 65532

PROVIDERS: dict[str, dict[str, Any]] = {
    "github": {
        "event_types": ["push"],
        "repo_url": "$(body.repository.clone_url)",
        # GitHub marks deletes with `deleted: true` (and an all-zero `after`).
        "not_deleted": f"!body.deleted && body.after != '{ZERO_SHA}'",
    },
    "gitlab": {
        "event_types": ["Push Hook"],
        "repo_url": "$(body.project.git_http_url)",
        "not_deleted": f"body.after != '{ZERO_SHA}'",
    },
}

# Posted by the CronJob: a static program, every value from the environment (no templating).
POST_SCHEDULE = """\
import hashlib, hmac, json, os, urllib.request
body = json.dumps({k: os.environ[k.upper()] for k in ("pipeline", "schedule", "repo_url",
                   "revision")}, sort_keys=True).encode()
key = os.environ["WEBHOOK_SECRET"].encode()
sig = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
req = urllib.request.Request(os.environ["LISTENER_URL"], data=body, method="POST", headers={
    "Content-Type": "application/json", "X-GitHub-Event": "taskyard-schedule",
    "X-Hub-Signature-256": sig})
with urllib.request.urlopen(req, timeout=30) as resp:
    print(resp.status, resp.read().decode())
"""


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "labels": {"app.kubernetes.io/part-of": PART_OF}, **extra}


# -- RBAC: the least the listener needs to read its config and create PipelineRuns ----------


def rbac(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    read = ["get", "list", "watch"]
    subject = {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(ACCOUNT)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(ACCOUNT),
            "rules": [
                {
                    "apiGroups": ["triggers.tekton.dev"],
                    "resources": [
                        "eventlisteners",
                        "triggerbindings",
                        "triggertemplates",
                        "triggers",
                        "interceptors",
                    ],
                    "verbs": read,
                },
                # the listener's logging/defaults config
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": read},
                {"apiGroups": ["tekton.dev"], "resources": ["pipelineruns"], "verbs": ["create"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(ACCOUNT),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ACCOUNT},
            "subjects": [subject],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(ACCOUNT),
            "rules": [
                {
                    "apiGroups": ["triggers.tekton.dev"],
                    "resources": ["clusterinterceptors", "clustertriggerbindings"],
                    "verbs": read,
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(ACCOUNT),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": ACCOUNT,
            },
            "subjects": [subject],
        },
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
    return out


def pipelinerun(pipeline: str, plan: Plan = DEFAULT) -> dict[str, Any]:
    """The PipelineRun for ``pipeline``: the plan's values, revision (and, unless pinned,
    repo-url) from the template's params."""
    run = tekton.pipelinerun_sample(plan.pipeline(pipeline), plan.values)
    params = {p["name"]: p["value"] for p in run["spec"].get("params", [])}
    if not plan.values.pinned:
        params["repo-url"] = "$(tt.params.repo-url)"
    params["revision"] = "$(tt.params.revision)"
    run["spec"]["params"] = [{"name": k, "value": v} for k, v in params.items()]
    run["metadata"]["labels"] = {
        "app.kubernetes.io/part-of": PART_OF,
        "taskyard.dev/pipeline": pipeline,
    }
    return run


def template(pipeline: str, plan: Plan = DEFAULT) -> dict[str, Any]:
    params = [{"name": "revision", "description": "The commit SHA (or branch) to run."}]
    if not plan.values.pinned:
        params.insert(0, {"name": "repo-url", "description": "The repository to clone."})
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


def cel_filter(provider: str, trigger: PushTrigger) -> str:
    """The CEL expression: branch glob on ``body.ref``, no deletes, optional changed paths."""
    branch = glob_regex(trigger.branches, "refs/heads/")
    expr = f"body.ref.matches(r'{branch}') && {PROVIDERS[provider]['not_deleted']}"
    if trigger.paths:
        path = glob_regex(trigger.paths)
        touched = " || ".join(
            f"c.{kind}.exists(f, f.matches(r'{path}'))" for kind in ("added", "modified", "removed")
        )
        expr += f" && body.commits.exists(c, {touched})"
    return expr


def _push_trigger(provider: str, trigger: PushTrigger) -> dict[str, Any]:
    verify = {"secretRef": _secret_ref(), "eventTypes": PROVIDERS[provider]["event_types"]}
    return {
        "name": f"{provider}-push-{trigger.pipeline}",
        "interceptors": [
            _interceptor(f"verify-{provider}", provider, verify),
            _interceptor("filter-push", "cel", {"filter": cel_filter(provider, trigger)}),
        ],
        "bindings": [{"ref": f"taskyard-{provider}-push"}],
        "template": {"ref": f"taskyard-{trigger.pipeline}"},
    }


def _cron_trigger(cron: CronTrigger) -> dict[str, Any]:
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
        "bindings": [{"ref": "taskyard-schedule"}],
        "template": {"ref": f"taskyard-{cron.pipeline}"},
    }


def event_listener(plan: Plan = DEFAULT) -> dict[str, Any]:
    triggers = [_push_trigger(prov, t) for t in plan.push for prov in PROVIDERS]
    triggers += [_cron_trigger(c) for c in plan.cron]
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
            {
                "name": "WEBHOOK_SECRET",
                "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": SECRET_KEY}},
            },
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
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
        "metadata": _meta(name),
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
                        },
                    },
                }
            },
        },
    }
    return [config, job]


def objects(plan: Plan = DEFAULT) -> dict[str, list[dict[str, Any]]]:
    """Every object, grouped by the file it is committed in."""
    pipelines = sorted({t.pipeline for t in plan.push} | {c.pipeline for c in plan.cron})
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
