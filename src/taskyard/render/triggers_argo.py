"""Argo Events (``argoproj.io/v1alpha1``) EventSource and Sensors for the catalog pipelines.

* EventSource ``taskyard-github``: receives GitHub pushes and checks ``X-Hub-Signature-256``
  against ``webhookSecret`` (no ``apiToken``: it never edits the repository's hooks). Its
  ``repositories`` entry only names the source: without an apiToken it restricts nothing
  (argo-events pkg/eventsources/sources/github/start.go: ``HandleRoute`` checks the signature
  only; repositories are read when creating hooks, ``NeedToCreateHooks``).
* One Sensor per push trigger: its dependency filters on the ``X-Github-Event`` header, the
  branch (``body.ref``, a regex), branch deletes (``body.deleted``), optionally the changed paths
  (a Lua script) and, when the render is for one repository, ``body.repository.full_name``. Its
  ``argoWorkflow`` trigger submits a Workflow from the pipeline's WorkflowTemplate
  (``hera/<pipeline>.yaml``) with ``repo-url``/``revision`` from the payload and the plan's
  model name and MLflow URI.
* EventSource ``taskyard-alertmanager``: a webhook for Alertmanager, ``authSecret`` = the
  bearer token in Secret ``taskyard-alertmanager`` key ``token`` (argo-events
  pkg/eventsources/common/webhook/webhook.go: a request without ``Authorization: Bearer
  <token>`` gets a 401). One Sensor per alert trigger filters on Alertmanager's v4 payload, the
  first alert firing with the trigger's ``alertname`` and an ``instance`` label that is a
  ``host:port``, and submits ``drift-retrain`` with ``current`` = that server's
  ``http://<instance>/monitoring/window``, named after the alert's fingerprint and ``startsAt``:
  one Workflow per firing episode, however often Alertmanager repeats or retries it.
* No schedule here: the scheduled retrain on Argo is the CronWorkflow ``hera/retrain-cron.yaml``
  alone (``concurrencyPolicy: Forbid``); a calendar EventSource next to it ran it twice.
* RBAC: the sensor gets exactly what its ``argo submit`` needs (:data:`SENSOR_RULES`).

A pinned plan (a team's repository, :mod:`taskyard.render.project`) submits the repository,
model name and MLflow URI as literal arguments and takes only ``revision`` from the event.

Pure: the plan in, dicts out; :func:`files` gives the committed YAML.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from taskyard.errors import RenderError
from taskyard.render._triggers import (
    ALERT_SECRET_KEY,
    ALERT_SECRET_NAME,
    DEFAULT,
    INSTANCE_RE,
    PART_OF,
    SECRET_KEY,
    SECRET_NAME,
    WINDOW_PATH,
    AlertTrigger,
    Plan,
    PushTrigger,
    glob_regex,
    repo_regex,
    run_values,
    to_text,
)

API = "argoproj.io/v1alpha1"
FOLDER = "triggers/argo-events"
GITHUB_SOURCE = "taskyard-github"
ALERT_SOURCE = "taskyard-alertmanager"
ALERT_EVENT = "alertmanager"
ALERT_ENDPOINT = "/alertmanager"
ALERT_PORT = 12001
SENSOR_ACCOUNT = "taskyard-sensor"
PORT = 12000
PUSH_EVENT = "push"
# Argo Workflows rejects a Workflow name over 63 characters (workflow/validate/validate.go,
# maxCharsInObjectName); the name is `<pipeline>-<commit SHA, as much as fits>`.
MAX_NAME = 63
MIN_SHA = 12
# What the argoWorkflow trigger's `operation: submit` does, verb by verb (argo-events v1.9.11
# bundles the argo CLI v3.7.9, Dockerfile ARGO_VERSION; the CLI runs in kube mode):
# - create workflows: `argo submit FILE` -> server/workflow/workflow_server.go CreateWorkflow;
# - get workflowtemplates: CreateWorkflow validates the workflowTemplateRef through
#   server/workflowtemplate/wf_client_store.go (a plain Get, no informer by default);
# - list workflows: afterwards the sensor lists the Workflows it labelled to find the one created
#   (pkg/sensors/triggers/argo-workflow/argo-workflow.go, Execute: List with LabelSelector);
#   forbidden, every event fails after its Workflow exists and retryStrategy submits again.
# Upstream's examples/rbac/sensor-rbac.yaml grants "*": this is the subset the code path uses.
SENSOR_RULES = (
    {"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create", "list"]},
    {"apiGroups": ["argoproj.io"], "resources": ["workflowtemplates"], "verbs": ["get"]},
)


def _meta(name: str) -> dict[str, Any]:
    return {"name": name, "labels": {"app.kubernetes.io/part-of": PART_OF}}


def _owner_repo(url: str) -> tuple[str, str]:
    owner, _, name = urlsplit(url).path.strip("/").removesuffix(".git").partition("/")
    return owner, name


def github_source(repo_url: str) -> dict[str, Any]:
    owner, name = _owner_repo(repo_url)
    return {
        "apiVersion": API,
        "kind": "EventSource",
        "metadata": _meta(GITHUB_SOURCE),
        "spec": {
            "service": {"ports": [{"port": PORT, "targetPort": PORT}]},
            "github": {
                PUSH_EVENT: {
                    "repositories": [{"owner": owner, "names": [name]}],
                    "events": ["push"],
                    "webhook": {
                        "endpoint": "/push",
                        "port": str(PORT),
                        "method": "POST",
                        "url": "",  # only used to register hooks, which needs an apiToken
                    },
                    "webhookSecret": {"name": SECRET_NAME, "key": SECRET_KEY},
                    "contentType": "json",
                    "active": True,
                    "insecure": False,
                }
            },
        },
    }


def lua_pattern(glob: str) -> str:
    """A glob as an anchored Lua pattern: ``*`` -> ``.*``, ``?`` -> ``.``, magic chars escaped."""
    out = []
    for ch in glob:
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch in "^$()%.[]+-":
            out.append("%" + ch)
        else:
            out.append(ch)
    return "^" + "".join(out) + "$"


def paths_script(paths: tuple[str, ...]) -> str:
    """A Lua filter: true when a pushed commit adds, modifies or removes a matching path."""
    patterns = ", ".join(f'"{lua_pattern(p)}"' for p in paths)
    return (
        f"local patterns = {{{patterns}}}\n"
        "for _, c in ipairs(event.body.commits or {}) do\n"
        '  for _, kind in ipairs({"added", "modified", "removed"}) do\n'
        "    for _, f in ipairs(c[kind] or {}) do\n"
        "      for _, p in ipairs(patterns) do\n"
        "        if string.match(f, p) then return true end\n"
        "      end\n"
        "    end\n"
        "  end\n"
        "end\n"
        "return false\n"
    )


def _arguments(pipeline: str, plan: Plan) -> list[dict[str, str]]:
    """``repo-url`` and ``revision`` (index 0 and 1: the trigger fills the revision, and unless
    pinned the repository, from the event), then the plan's model name, MLflow URI, params."""
    repo = plan.values.repo_url if plan.values.pinned else ""
    out = [{"name": "repo-url", "value": repo}, {"name": "revision", "value": ""}]
    out += [{"name": k, "value": v} for k, v in run_values(plan, pipeline).items()]
    return out


def sha_length(pipeline: str) -> int:
    """How much of the commit SHA fits in the Workflow name ``<pipeline>-<sha>`` (at most 40)."""
    room = MAX_NAME - len(pipeline) - 1
    if room < MIN_SHA:
        raise RenderError(
            f"pipeline {pipeline!r}: name too long for a Workflow named after the commit "
            f"(at most {MAX_NAME - MIN_SHA - 1} characters)"
        )
    return min(40, room)


def _workflow(pipeline: str, plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Workflow",
        "metadata": {
            # `<pipeline>-` + the SHA (the trigger appends it): see _trigger.
            "name": f"{pipeline}-",
            "labels": {"app.kubernetes.io/part-of": PART_OF, "taskyard.dev/pipeline": pipeline},
        },
        "spec": {
            "workflowTemplateRef": {"name": pipeline},
            "arguments": {"parameters": _arguments(pipeline, plan)},
        },
    }


def _trigger(
    pipeline: str, dependency: str, repo_key: str, revision_key: str, plan: Plan
) -> dict[str, Any]:
    """Submit once per (pipeline, commit), however often it is retried or redelivered.

    The sensor retries the whole trigger (fetch, `argo submit`, list) on any error
    (argo-events pkg/sensors/listener.go, ``DoWithRetry`` around ``triggerActions``), so a
    ``generateName`` Workflow would be submitted again by every retry after a late failure.
    Named ``<pipeline>-<sha>`` instead, a second submit of the same commit fails with
    AlreadyExists and creates nothing (the same dedup as ``taskyard serve``: repo, commit,
    pipeline). The name is appended by a parameter (``operation: append``,
    pkg/sensors/triggers/params.go ``ApplyParams``), the SHA cut by a sprig ``trunc``.
    """

    def param(index: int, key: str) -> dict[str, Any]:
        return {
            "src": {"dependencyName": dependency, "dataKey": key},
            "dest": f"spec.arguments.parameters.{index}.value",
        }

    sha = f"{{{{ .Input.{revision_key} | lower | trunc {sha_length(pipeline)} }}}}"
    name = {
        "src": {"dependencyName": dependency, "dataTemplate": sha},
        "dest": "metadata.name",
        "operation": "append",
    }
    params = [param(1, revision_key)]
    if not plan.values.pinned:
        params.insert(0, param(0, repo_key))
    return {
        "template": {
            "name": f"submit-{pipeline}",
            "argoWorkflow": {
                "operation": "submit",
                "source": {"resource": _workflow(pipeline, plan)},
                "parameters": [*params, name],
            },
        },
        "retryStrategy": {"steps": 3},
    }


def push_sensor(trigger: PushTrigger, plan: Plan = DEFAULT) -> dict[str, Any]:
    filters: dict[str, Any] = {
        "data": [
            {"path": "headers.X-Github-Event", "type": "string", "value": ["push"]},
            # string values are Go regexes
            {
                "path": "body.ref",
                "type": "string",
                "value": [glob_regex(trigger.branches, "refs/heads/")],
            },
            {"path": "body.deleted", "type": "bool", "value": ["false"]},
        ]
    }
    if plan.values.pinned:
        # Only the signature guards the EventSource (see the module doc): check the repository.
        filters["data"].append(
            {
                "path": "body.repository.full_name",
                "type": "string",
                "value": [repo_regex(plan.values.repo_url)],
            }
        )
    if trigger.paths:
        filters["script"] = paths_script(trigger.paths)
    return {
        "apiVersion": API,
        "kind": "Sensor",
        "metadata": _meta(f"taskyard-{trigger.pipeline}"),
        "spec": {
            "template": {"serviceAccountName": SENSOR_ACCOUNT},
            "dependencies": [
                {
                    "name": "push",
                    "eventSourceName": GITHUB_SOURCE,
                    "eventName": PUSH_EVENT,
                    "filters": filters,
                }
            ],
            "triggers": [
                _trigger(trigger.pipeline, "push", "body.repository.clone_url", "body.after", plan)
            ],
        },
    }


def alert_source() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "EventSource",
        "metadata": _meta(ALERT_SOURCE),
        "spec": {
            "service": {"ports": [{"port": ALERT_PORT, "targetPort": ALERT_PORT}]},
            "webhook": {
                ALERT_EVENT: {
                    "endpoint": ALERT_ENDPOINT,
                    "port": str(ALERT_PORT),
                    "method": "POST",
                    "url": "",
                    "authSecret": {"name": ALERT_SECRET_NAME, "key": ALERT_SECRET_KEY},
                    "maxPayloadSize": 1 << 20,
                }
            },
        },
    }


# gjson paths (argo-events filters) and Go-template expressions of the first alert.
FIRST = "body.alerts.0"
FIRST_TEMPLATE = "(index .Input.body.alerts 0)"


def alert_sensor(alert: AlertTrigger, plan: Plan = DEFAULT) -> dict[str, Any]:
    pipeline = alert.pipeline
    dependency = "alert"
    repo = plan.values.repo_url
    arguments = [
        {"name": "repo-url", "value": repo},
        {"name": "revision", "value": alert.revision},
        {"name": "current", "value": ""},
        *({"name": k, "value": v} for k, v in run_values(plan, pipeline).items()),
    ]
    workflow = _workflow(pipeline, plan)
    workflow["spec"]["arguments"]["parameters"] = arguments
    window = f"http://{{{{ {FIRST_TEMPLATE}.labels.instance }}}}{WINDOW_PATH}"
    episode = (
        f"{{{{ {FIRST_TEMPLATE}.fingerprint | lower | trunc 16 }}}}-"
        f"{{{{ {FIRST_TEMPLATE}.startsAt | sha1sum | trunc 8 }}}}"
    )
    filters = {
        "data": [
            {"path": "body.version", "type": "string", "value": ["^4$"]},
            {"path": f"{FIRST}.status", "type": "string", "value": ["^firing$"]},
            {
                "path": f"{FIRST}.labels.alertname",
                "type": "string",
                "value": [f"^{alert.alertname}$"],
            },
            {"path": f"{FIRST}.labels.instance", "type": "string", "value": [INSTANCE_RE]},
        ]
    }
    trigger = {
        "template": {
            "name": f"submit-{pipeline}",
            "argoWorkflow": {
                "operation": "submit",
                "source": {"resource": workflow},
                "parameters": [
                    {
                        "src": {"dependencyName": dependency, "dataTemplate": window},
                        "dest": "spec.arguments.parameters.2.value",
                    },
                    {
                        "src": {"dependencyName": dependency, "dataTemplate": episode},
                        "dest": "metadata.name",
                        "operation": "append",
                    },
                ],
            },
        },
        "retryStrategy": {"steps": 3},
    }
    return {
        "apiVersion": API,
        "kind": "Sensor",
        "metadata": _meta(f"taskyard-alert-{alert.name}"),
        "spec": {
            "template": {"serviceAccountName": SENSOR_ACCOUNT},
            "dependencies": [
                {
                    "name": dependency,
                    "eventSourceName": ALERT_SOURCE,
                    "eventName": ALERT_EVENT,
                    "filters": filters,
                }
            ],
            "triggers": [trigger],
        },
    }


def _role(name: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(name),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name}],
        },
    ]


def rbac() -> list[dict[str, Any]]:
    """The sensor's account: :data:`SENSOR_RULES`, nothing more."""
    return _role(SENSOR_ACCOUNT, [dict(r) for r in SENSOR_RULES])


def objects(plan: Plan = DEFAULT) -> dict[str, list[dict[str, Any]]]:
    """The push and alert triggers: ``plan.cron`` is the CronWorkflows' job on Argo (hera/)."""
    sources = [github_source(plan.repo_url)] + ([alert_source()] if plan.alerts else [])
    return {
        "eventsources.yaml": sources,
        "sensors.yaml": [
            *(push_sensor(t, plan) for t in plan.push),
            *(alert_sensor(a, plan) for a in plan.alerts),
        ],
        "rbac.yaml": rbac(),
    }


def files(plan: Plan = DEFAULT) -> dict[str, str]:
    return {f"{FOLDER}/{name}": to_text(docs) for name, docs in objects(plan).items()}
