"""Cluster files for a team's own repository: one pipeline (a catalog one or a fork), rendered
with the team's values instead of the catalog's placeholders.

``taskyard render --pipeline … --repo-url … --out DIR`` writes :func:`files`::

    tasks/<task>/<version>/<task>.yaml                      Tekton Task, each task the pipeline uses
    pipelines/<p>/<version>/<p>.yaml                        Tekton Pipeline
    pipelines/<p>/<version>/samples/<p>-run.yaml            PipelineRun
    triggers/tekton/*.yaml                                  EventListener, bindings, templates,
                                                            RBAC, the schedule's CronJob
    argo/<p>.yaml, argo/<p>-cron.yaml                       WorkflowTemplate, CronWorkflow
    argo/rbac.yaml                                          the templates' ServiceAccount + Role
    triggers/argo-events/*.yaml                             GitHub EventSource, Sensor, RBAC
    namespace/rbac.yaml                                     the task kinds' ServiceAccounts (the
                                                            runs above name them) + deploy's Role

The same renderers as the catalog's, given a :class:`~taskyard.render.values.Values` with
``pinned=True``: every run and trigger clones the given repository with the given model name and
MLflow URI (only the revision comes from the event), the pipeline's params default to those
values, and image params point at the given registry. On Argo the schedule is the CronWorkflow
alone, as in the catalog (Argo Events renders no calendar: both applied, it ran twice).

Pure: the spec and values in, file texts out; :func:`taskyard.render.emit.write_files` writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskyard.errors import RenderError
from taskyard.render import (
    argo,
    argo_rbac,
    emit,
    namespace,
    tekton,
    triggers_argo,
    triggers_tekton,
)
from taskyard.render._triggers import (
    DRIFT_ALERT,
    AlertTrigger,
    CronTrigger,
    Plan,
    PushTrigger,
    to_text,
)
from taskyard.render.argo_files import text as argo_text
from taskyard.render.tekton_files import pipeline_dir, task_dir, to_yaml
from taskyard.render.values import CATALOG, Values
from taskyard.spec import Param, PipelineSpec, PipelineTask, TaskSpec

# What the triggers pass: a pipeline without these params cannot be triggered.
TRIGGER_PARAMS = ("repo-url", "revision")
# Objects that live outside any namespace (metadata.namespace would be an error).
CLUSTER_KINDS = frozenset({"ClusterRole", "ClusterRoleBinding"})
_GLOB = set("*?[")


@dataclass(frozen=True)
class Schedule:
    """When the pipeline runs on its own (``cron=""``: never) and which branch pushes run it."""

    branches: tuple[str, ...] = ("main",)
    cron: str = "0 3 * * *"
    timezone: str = "Etc/UTC"

    @property
    def revision(self) -> str:
        """The scheduled run's revision: the first plain branch (a glob names none)."""
        return next((b for b in self.branches if not _GLOB & set(b)), "")


def _values_by_param(values: Values) -> dict[str, str]:
    return {"repo-url": values.repo_url, **values.pinned_params()}


def check(spec: PipelineSpec, values: Values) -> None:
    """Fail before rendering when a value has no param to go to, or a param has no value."""
    declared = {p.name: p for p in spec.params}
    where = f"pipeline {spec.name!r}"
    for name in TRIGGER_PARAMS:
        if name not in declared:
            raise RenderError(f"{where} has no param {name!r}: the triggers pass {name}")
    for name, value in dict(values.params).items():
        if name not in declared:
            known = ", ".join(sorted(declared))
            raise RenderError(f"{where} has no param {name!r} (known: {known})")
        if why := declared[name].problem(value):
            raise RenderError(f"{where}, param {name!r}: {why}")
    given = _values_by_param(values)
    missing = [p.name for p in spec.params if p.required and p.name not in given]
    missing = [n for n in missing if n != "revision"]
    if missing:
        flags = " ".join(f"-p {n}=VALUE" for n in missing)
        raise RenderError(f"{where}: required param {missing[0]!r} has no value ({flags})")


def _image_default(p: Param, registry: str) -> Param:
    """A catalog image param (``<catalog registry>/<image>:<version>``) on ``registry``: a
    task's ``image`` and a pipeline's ``<image>-image`` (catalog/pipelines/_parts.py)."""
    prefix = CATALOG.image_registry.rstrip("/") + "/"
    is_image = p.name == "image" or p.name.endswith("-image")
    if not is_image or not (p.default or "").startswith(prefix):
        return p
    image = registry.rstrip("/") + "/" + (p.default or "").removeprefix(prefix)
    return Param(**{**p.model_dump(), "default": image})


def _task(t: TaskSpec, values: Values) -> TaskSpec:
    if values.image_registry == CATALOG.image_registry:
        return t
    return t.model_copy(
        update={"params": tuple(_image_default(p, values.image_registry) for p in t.params)}
    )


def for_repository(spec: PipelineSpec, values: Values) -> PipelineSpec:
    """The pipeline as the repository runs it: its values as param defaults (so a bare
    ``argo submit --from`` or ``tkn pipeline start`` needs no flags) and its image registry."""
    check(spec, values)
    given = _values_by_param(values)
    params = tuple(
        Param(**{**p.model_dump(), "default": given[p.name]})
        if p.name in given
        else _image_default(p, values.image_registry)
        for p in spec.params
    )

    def moved(pt: PipelineTask) -> PipelineTask:
        return pt.model_copy(update={"task": _task(pt.task, values)})

    return spec.model_copy(
        update={
            "params": params,
            "tasks": tuple(moved(t) for t in spec.tasks),
            "finally_": tuple(moved(t) for t in spec.finally_),
        }
    )


def _with_namespace(doc: dict[str, Any], values: Values) -> dict[str, Any]:
    if not values.set_namespace or doc.get("kind") in CLUSTER_KINDS:
        return doc
    meta = doc["metadata"]
    key = "name" if "name" in meta else "generateName"
    ordered: dict[str, Any] = {}
    for k, v in meta.items():
        ordered[k] = v
        if k == key:
            ordered["namespace"] = values.namespace
    return {**doc, "metadata": ordered}


def _tekton_yaml(doc: dict[str, Any], values: Values) -> str:
    return emit.HEADER + to_yaml(_with_namespace(doc, values))


def _tasks_of(spec: PipelineSpec) -> list[TaskSpec]:
    seen: dict[str, TaskSpec] = {}
    for pt in spec.all_tasks:
        other = seen.setdefault(pt.task.name, pt.task)
        if other != pt.task:
            raise RenderError(
                f"pipeline {spec.name!r}: two different tasks are named {pt.task.name!r}"
            )
    return list(seen.values())


def plan(spec: PipelineSpec, values: Values, schedule: Schedule) -> Plan:
    """The triggers of one pipeline: pushes to ``branches``, and the schedule if any."""
    cron: tuple[CronTrigger, ...] = ()
    if schedule.cron:
        cron = (
            CronTrigger(
                name=f"{spec.name}-schedule",
                pipeline=spec.name,
                schedule=schedule.cron,
                timezone=schedule.timezone,
                repo_url=values.repo_url,
                revision=schedule.revision,
            ),
        )
    alerts: tuple[AlertTrigger, ...] = ()
    if any(pt.task.name == "detect-drift" for pt in spec.tasks):  # the drift alert fires it
        alerts = (AlertTrigger(f"{spec.name}-drift", DRIFT_ALERT, spec.name, schedule.revision),)
    return Plan(
        push=(PushTrigger(spec.name, schedule.branches),),
        cron=cron,
        alerts=alerts,
        values=values,
        pipelines={spec.name: spec},
    )


def _trigger_files(
    folder: str, objects: Mapping[str, list[dict[str, Any]]], values: Values
) -> dict[str, str]:
    return {
        f"{folder}/{name}": to_text([_with_namespace(d, values) for d in docs])
        for name, docs in objects.items()
        if docs
    }


def files(spec: PipelineSpec, values: Values, schedule: Schedule | None = None) -> dict[str, str]:
    """Every file for the repository, by path relative to the output folder."""
    if not values.pinned:
        raise RenderError("a repository render needs pinned values (Values(pinned=True, …))")
    schedule = schedule or Schedule()
    spec = for_repository(spec, values)
    out: dict[str, str] = {}
    for t in _tasks_of(spec):
        out[f"{task_dir(t)}/{t.name}.yaml"] = _tekton_yaml(tekton.task(t), values)
    base = pipeline_dir(spec)
    out[f"{base}/{spec.name}.yaml"] = _tekton_yaml(tekton.pipeline(spec), values)
    run = tekton.pipelinerun_sample(spec, values)
    out[f"{base}/samples/{spec.name}-run.yaml"] = _tekton_yaml(run, values)
    triggers = plan(spec, values, schedule)
    out.update(_trigger_files(triggers_tekton.FOLDER, triggers_tekton.objects(triggers), values))
    namespace = values.namespace if values.set_namespace else None
    out[f"argo/{spec.name}.yaml"] = argo_text(
        argo.workflow_template(spec, argo.Options(namespace=namespace))
    )
    out["argo/rbac.yaml"] = emit.HEADER + argo_rbac.text(namespace)
    if schedule.cron:
        declared = {p.name for p in spec.params}
        arguments = {
            k: v
            for k, v in {**_values_by_param(values), "revision": schedule.revision}.items()
            if k in declared
        }
        cron = argo.CronOptions(
            schedules=(schedule.cron,),
            timezone=schedule.timezone,
            arguments=arguments,
            namespace=namespace,
        )
        out[f"argo/{spec.name}-cron.yaml"] = argo_text(argo.cron_workflow(spec, cron))
    push_only = Plan(
        push=triggers.push,
        cron=(),
        alerts=triggers.alerts,
        values=values,
        pipelines=triggers.pipelines,
    )
    out.update(_trigger_files(triggers_argo.FOLDER, triggers_argo.objects(push_only), values))
    # Every run above names its tasks' accounts: they must exist where the runs do.
    out["namespace/rbac.yaml"] = to_text(_accounts(values))
    return out


def _accounts(values: Values) -> list[dict[str, Any]]:
    """The task kinds' ServiceAccounts and deploy's Role (render/namespace.py), in the render's
    namespace, or in none (wherever they are applied: a RoleBinding's ServiceAccount subject
    without a namespace is the binding's own, as hera/rbac.yaml's)."""
    docs = namespace.rbac(namespace.NamespaceOptions(namespace=values.namespace))
    if values.set_namespace:
        return docs
    for doc in docs:
        doc["metadata"].pop("namespace", None)
        for subject in doc.get("subjects", []):
            subject.pop("namespace", None)
    return docs
