"""Argo Events (``argoproj.io/v1alpha1``) EventSources and Sensors for the catalog pipelines.

* EventSource ``taskyard-github``: receives GitHub pushes and checks ``X-Hub-Signature-256``
  against ``webhookSecret`` (no ``apiToken``: it never edits the repository's hooks; the
  ``repositories`` entry is what Argo Events requires to name the source).
* EventSource ``taskyard-calendar``: the cron schedules, timezone aware, with catch-up persisted
  in a ConfigMap (``maxDuration`` 24h: after downtime, the missed nightly run fires once).
* One Sensor per pipeline: its dependency filters on the ``X-Github-Event`` header, the branch
  (``body.ref``, a regex), branch deletes (``body.deleted``) and optionally the changed paths (a
  Lua script); its ``argoWorkflow`` trigger submits a Workflow from the pipeline's
  WorkflowTemplate (``hera/<pipeline>.yaml``) with ``repo-url``/``revision`` from the payload.
* RBAC: the sensor may only create Workflows; the calendar source may only keep its ConfigMap.

A pinned plan (a team's repository, :mod:`taskyard.render.project`) submits the repository,
model name and MLflow URI as literal arguments and takes only ``revision`` from the event.

Pure: the plan in, dicts out; :func:`files` gives the committed YAML.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from taskyard.render._triggers import (
    DEFAULT,
    PART_OF,
    SECRET_KEY,
    SECRET_NAME,
    CronTrigger,
    Plan,
    PushTrigger,
    glob_regex,
    to_text,
)

API = "argoproj.io/v1alpha1"
FOLDER = "triggers/argo-events"
GITHUB_SOURCE = "taskyard-github"
CALENDAR_SOURCE = "taskyard-calendar"
SENSOR_ACCOUNT = "taskyard-sensor"
CALENDAR_ACCOUNT = "taskyard-calendar"
CALENDAR_STATE = "taskyard-calendar-state"
PORT = 12000
PUSH_EVENT = "push"


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


def calendar_source(crons: tuple[CronTrigger, ...]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "EventSource",
        "metadata": _meta(CALENDAR_SOURCE),
        "spec": {
            "template": {"serviceAccountName": CALENDAR_ACCOUNT},
            "calendar": {
                c.name: {
                    "schedule": c.schedule,
                    "timezone": c.timezone,
                    "metadata": {
                        "pipeline": c.pipeline,
                        "repo-url": c.repo_url,
                        "revision": c.revision,
                    },
                    "persistence": {
                        "catchup": {"enabled": True, "maxDuration": "24h"},
                        "configMap": {"name": CALENDAR_STATE, "createIfNotExist": True},
                    },
                }
                for c in crons
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
    """``repo-url`` and ``revision`` (index 0 and 1: the trigger fills them from the event);
    pinned, the plan's repository, model name and MLflow URI instead of the event's."""
    if not plan.values.pinned:
        return [{"name": "repo-url", "value": ""}, {"name": "revision", "value": ""}]
    declared = {p.name for p in plan.pipeline(pipeline).params}
    out = [{"name": "repo-url", "value": plan.values.repo_url}, {"name": "revision", "value": ""}]
    out += [
        {"name": name, "value": value}
        for name, value in plan.values.pinned_params().items()
        if name in declared
    ]
    return out


def _workflow(pipeline: str, plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Workflow",
        "metadata": {
            "generateName": f"{pipeline}-",
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
    def param(index: int, key: str) -> dict[str, Any]:
        return {
            "src": {"dependencyName": dependency, "dataKey": key},
            "dest": f"spec.arguments.parameters.{index}.value",
        }

    return {
        "template": {
            "name": f"submit-{pipeline}",
            "argoWorkflow": {
                "operation": "submit",
                "source": {"resource": _workflow(pipeline, plan)},
                "parameters": (
                    [param(1, revision_key)]
                    if plan.values.pinned
                    else [param(0, repo_key), param(1, revision_key)]
                ),
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


def cron_sensor(cron: CronTrigger, plan: Plan = DEFAULT) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Sensor",
        "metadata": _meta(f"taskyard-{cron.name}"),
        "spec": {
            "template": {"serviceAccountName": SENSOR_ACCOUNT},
            "dependencies": [
                {"name": "schedule", "eventSourceName": CALENDAR_SOURCE, "eventName": cron.name}
            ],
            "triggers": [
                _trigger(cron.pipeline, "schedule", "metadata.repo-url", "metadata.revision", plan)
            ],
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


def rbac(calendar: bool = True) -> list[dict[str, Any]]:
    """The sensor's account; the calendar source's too when there is a schedule."""
    sensor = _role(
        SENSOR_ACCOUNT,
        [{"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create"]}],
    )
    if not calendar:
        return sensor
    return [
        *sensor,
        *_role(
            CALENDAR_ACCOUNT,
            [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "verbs": ["get", "create", "update"],
                }
            ],
        ),
    ]


def objects(plan: Plan = DEFAULT) -> dict[str, list[dict[str, Any]]]:
    sources = [github_source(plan.repo_url)]
    if plan.cron:
        sources.append(calendar_source(plan.cron))
    return {
        "eventsources.yaml": sources,
        "sensors.yaml": [push_sensor(t, plan) for t in plan.push]
        + [cron_sensor(c, plan) for c in plan.cron],
        "rbac.yaml": rbac(calendar=bool(plan.cron)),
    }


def files(plan: Plan = DEFAULT) -> dict[str, str]:
    return {f"{FOLDER}/{name}": to_text(docs) for name, docs in objects(plan).items()}
