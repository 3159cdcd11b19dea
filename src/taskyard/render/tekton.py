"""Tekton v1 (``tekton.dev/v1``) documents from the spec: Task, Pipeline, TaskRun, PipelineRun.

Pure: a spec in, a plain dict out (keys in Tekton's usual order), no I/O, env or clock. Written
from the v1 API itself, not the ``tekton-pipeline`` SDK (which only knows v1beta1).

Tekton facts relied on (tektoncd/pipeline ``docs/variables.md``, "Fields that accept variable
substitutions"): ``$(...)`` is replaced in ``steps[].image``, ``command``, ``args`` and
``env.value`` -- so results travel as ``TASKYARD_RESULT_<NAME>=$(results.NAME.path)`` env values
and params as args, with no ``script`` at all; ``$(workspaces.NAME.path)`` of an unbound optional
workspace is the empty string (the steps treat an empty path as "not given");
``$(tasks.status)`` and ``$(tasks.TASK.status)`` exist only in ``finally`` tasks.

Who the pods run as (:mod:`taskyard.render.accounts`): a run's ``taskRunTemplate`` names the
default kind's account (``taskyard-ml``) and ``taskRunSpecs`` the tasks whose account differs
(``pipelineTaskName`` + ``serviceAccountName``; docs/pipelineruns.md "Specifying taskRunSpecs":
they override the pipeline-wide ``serviceAccountName``, pkg/apis/pipeline/v1/
pipelinerun_types.go ``GetTaskRunSpec``, and a ``pipelineTaskName`` the Pipeline lacks fails
the run, InvalidTaskRunSpecs, pkg/reconciler/pipelinerun/resources/pipelinerunresolution.go
``ValidateTaskRunSpecs``). Every Task and Pipeline is labelled ``app.kubernetes.io/part-of:
taskyard``, which Tekton copies to the runs and their pods (docs/labels.md "Label
propagation": Pipeline -> PipelineRun, pkg/reconciler/pipelinerun/pipelinerun.go
``storePipelineSpecAndMergeMeta``; PipelineRun -> TaskRun, ``createChildResourceLabels``;
Task -> TaskRun, pkg/reconciler/taskrun/taskrun.go ``storeTaskSpecAndMergeMeta``;
TaskRun -> Pod, pkg/pod/pod.go ``makeLabels``): the
MLflow NetworkPolicy admits pods by it (:mod:`taskyard.render.namespace`).
"""

from __future__ import annotations

from typing import Any

from taskyard.errors import RenderError
from taskyard.render import accounts
from taskyard.render.docs import duration, sample_params
from taskyard.render.values import CATALOG, Values
from taskyard.spec import Param, PipelineSpec, PipelineTask, TaskSpec, refs
from taskyard.spec.pipeline import array_params

API = "tekton.dev/v1"
# The oldest Pipelines release serving everything rendered here (tektoncd/pipeline, checked in its
# history): the v1 CRDs are served since v0.44.0 (config/300-pipeline.yaml, `name: v1`, `served:
# true`); Task/Pipeline ``spec.displayName`` (TEP-0047, commit 3d86fa5ce) is first in v0.47.0;
# results, when, finally, retries, optional workspaces, ``timeouts``, ``taskRunTemplate`` and
# ``taskRunSpecs`` (both with ``serviceAccountName``) are in v1 from the start, and none of them
# is behind ``enable-api-fields`` at v0.47.0 (pkg/apis/pipeline/v1/*_validation.go gate only
# matrix, stepSpecs, sidecarSpecs, taskRunSpecs[].computeResources, step workspaces and object
# params, none used).
MIN_VERSION = "0.47.0"
# A Pipeline with a ``matrix`` (the sweep): matrix is beta from v0.53.0 (docs/matrix.md there:
# "Matrix is an beta feature. The enable-api-fields feature flag can be set to "beta"") and
# results of fanned-out tasks are consumable from v0.51.0 (docs/matrix.md "Results from fanned
# out Matrixed PipelineTasks", first in that release). The cluster needs enable-api-fields
# "beta" (or "alpha") in the feature-flags ConfigMap.
MATRIX_MIN_VERSION = "0.53.0"
MATRIX_FEATURE_FLAG = "enable-api-fields: beta"
# The distroless "nonroot" uid (also what tektoncd's git-clone runs as); the task images own
# their HOME for it, and run samples set fsGroup to it so a fresh PVC is writable.
NON_ROOT_UID = 65532
GPU_RESOURCE = "nvidia.com/gpu"
# Where GPU pods go: the label NVIDIA's GPU feature discovery / GPU operator sets, and the
# taint GPU node pools commonly carry (GKE sets exactly this one).
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
SOURCE_CLAIM = "taskyard-source"
SOURCE_STORAGE = "1Gi"


def ref_text(text: str) -> str:
    """The one translation hook: the spec's ``$(...)`` spelling is Tekton's, ref by ref."""
    return refs.substitute(text, lambda ref: ref.text)


def _metadata(
    name: str,
    version: str,
    display_name: str,
    categories: tuple[str, ...],
    tags: tuple[str, ...],
    platforms: tuple[str, ...],
    min_version: str = MIN_VERSION,
) -> dict[str, Any]:
    annotations = {"tekton.dev/pipelines.minVersion": min_version}
    if categories:
        annotations["tekton.dev/categories"] = ", ".join(categories)
    if tags:
        annotations["tekton.dev/tags"] = ", ".join(tags)
    annotations["tekton.dev/displayName"] = display_name
    if platforms:
        annotations["tekton.dev/platforms"] = ",".join(platforms)
    # What Artifact Hub lists besides the tekton.dev/* ones (render/artifacthub.py). Imported
    # here: artifacthub names the release through render/resolver.py, which builds on us.
    from taskyard.render import artifacthub

    annotations.update(artifacthub.annotations())
    return {
        "name": name,
        "labels": {"app.kubernetes.io/version": version, **accounts.POD_LABELS},
        "annotations": annotations,
    }


def _param_spec(p: Param, array: bool = False) -> dict[str, Any]:
    """A param; ``array``: one the task expands with ``$(params.NAME[*])`` (a fanned-out
    task's results, docs/matrix.md), which Tekton substitutes only for ``type: array``."""
    if array and p.default is not None:
        raise RenderError(f"param {p.name!r}: an array param takes no string default")
    out: dict[str, Any] = {"name": p.name, "type": "array" if array else "string"}
    if p.description:
        out["description"] = p.description
    if p.default is not None:
        out["default"] = p.default
    return out


def _compute_resources(task: TaskSpec) -> dict[str, Any]:
    r = task.resources
    requests = {k: v for k, v in (("cpu", r.cpu), ("memory", r.memory)) if v}
    limits: dict[str, Any] = {"memory": r.memory_max} if r.memory_max else {}
    if r.gpu:
        # Extended resources are set as limits (a request, if given, must equal the limit).
        limits[GPU_RESOURCE] = r.gpu
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _security_context() -> dict[str, Any]:
    """What PodSecurity ``restricted`` asks of every container, as the Argo renders have it.

    restricted rejects a pod without ``seccompProfile`` RuntimeDefault/Localhost, without
    ``runAsNonRoot``, with privilege escalation or capabilities beyond NET_BIND_SERVICE
    (https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted).
    Set on the step, since a Task has no pod-level securityContext of its own.
    """
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _check_arrays(t: TaskSpec) -> set[str]:
    """Array params only as whole args: Tekton expands ``$(params.x[*])`` "inside an existing
    array using the star operator" (docs/tasks.md, params), i.e. as elements of ``args``."""
    arrays = array_params(t)
    for field, text in t.texts():
        for ref in refs.find(text):
            if (
                ref.kind == "param"
                and ref.name in arrays
                and not (ref.array and text == ref.text and field.startswith("args["))
            ):
                raise RenderError(
                    f"task {t.name!r}, {field}: array param {ref.name!r} can only be a whole "
                    f"arg, $(params.{ref.name}[*])"
                )
    return arrays


def task(t: TaskSpec) -> dict[str, Any]:
    """The Task: one step running the step CLI, params as args/env, results via env paths."""
    arrays = _check_arrays(t)
    step: dict[str, Any] = {
        "name": t.name,
        "image": ref_text(t.image),
        "command": [ref_text(c) for c in t.command],
    }
    if t.args:
        step["args"] = [ref_text(a) for a in t.args]
    if t.env:
        step["env"] = [{"name": k, "value": ref_text(v)} for k, v in t.env.items()]
    resources = _compute_resources(t)
    if resources:
        step["computeResources"] = resources
    step["securityContext"] = _security_context()
    spec: dict[str, Any] = {"displayName": t.display_name, "description": t.description}
    if t.params:
        spec["params"] = [_param_spec(p, p.name in arrays) for p in t.params]
    if t.results:
        spec["results"] = [_described(r.name, r.description, type="string") for r in t.results]
    if t.workspaces:
        spec["workspaces"] = [
            _described(w.name, w.description)
            | ({"optional": True} if w.optional else {})
            | ({"readOnly": True} if w.read_only else {})
            for w in t.workspaces
        ]
    spec["steps"] = [step]
    meta = _metadata(t.name, t.version, t.display_name, t.categories, t.tags, t.platforms)
    return {"apiVersion": API, "kind": "Task", "metadata": meta, "spec": spec}


def _described(name: str, description: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if description:
        out["description"] = description
    out.update(extra)
    return out


def _pipeline_task(pt: PipelineTask) -> dict[str, Any]:
    out: dict[str, Any] = {"name": pt.name, "taskRef": {"kind": "Task", "name": pt.task.name}}
    if pt.run_after:
        out["runAfter"] = list(pt.run_after)
    if pt.when:
        out["when"] = [
            {"input": ref_text(w.input), "operator": w.operator, "values": list(w.values)}
            for w in pt.when
        ]
    if pt.params:
        out["params"] = [{"name": k, "value": ref_text(v)} for k, v in pt.params.items()]
    if pt.matrix:
        # docs/matrix.md "Generating Combinations": matrix.params, each an array of values
        out["matrix"] = {"params": [{"name": k, "value": list(v)} for k, v in pt.matrix.items()]}
    if pt.workspaces:
        out["workspaces"] = [{"name": k, "workspace": v} for k, v in pt.workspaces.items()]
    if pt.retries:
        out["retries"] = pt.retries
    if pt.timeout:
        out["timeout"] = duration(pt.timeout)
    return out


def _platforms(p: PipelineSpec) -> tuple[str, ...]:
    """The platforms every task of the pipeline runs on, in the first task's order."""
    first = p.all_tasks[0].task.platforms
    return tuple(x for x in first if all(x in t.task.platforms for t in p.all_tasks))


def pipeline(p: PipelineSpec) -> dict[str, Any]:
    """The Pipeline: tasks by ``taskRef``, result wiring, ``when`` gates, ``finally``.

    The spec's whole-run timeout has no place in a v1 Pipeline; the PipelineRun sample carries
    it as ``timeouts.pipeline``.
    """
    spec: dict[str, Any] = {"displayName": p.display_name, "description": p.description}
    if p.params:
        spec["params"] = [_param_spec(x) for x in p.params]
    if p.workspaces:
        spec["workspaces"] = [
            _described(w.name, w.description) | ({"optional": True} if w.optional else {})
            for w in p.workspaces
        ]
    spec["tasks"] = [_pipeline_task(t) for t in p.tasks]
    if p.finally_:
        spec["finally"] = [_pipeline_task(t) for t in p.finally_]
    if p.results:
        spec["results"] = [
            _described(r.name, r.description, value=ref_text(r.value)) for r in p.results
        ]
    floor = MATRIX_MIN_VERSION if any(t.matrix for t in p.tasks) else MIN_VERSION
    meta = _metadata(p.name, p.version, p.display_name, p.categories, p.tags, _platforms(p), floor)
    return {"apiVersion": API, "kind": "Pipeline", "metadata": meta, "spec": spec}


def _pod_template(gpu: bool) -> dict[str, Any]:
    """fsGroup so a fresh PVC is writable; GPU node placement when ``gpu``."""
    out: dict[str, Any] = {"securityContext": {"fsGroup": NON_ROOT_UID}}
    if gpu:
        out["nodeSelector"] = dict(GPU_NODE_SELECTOR)
        out["tolerations"] = [dict(x) for x in GPU_TOLERATIONS]
    return out


def timeouts(p: PipelineSpec) -> dict[str, str] | None:
    """``timeouts`` that leave the ``finally`` tasks their own budget.

    With ``pipeline`` alone, a run that uses it up cancels the finally tasks too; with
    ``tasks`` + ``finally`` <= ``pipeline``, the DAG is cancelled at ``tasks`` and the finally
    tasks still run (tektoncd/pipeline docs/pipelineruns.md, "Configuring a failure timeout").
    Finally tasks run in parallel, so their budget is the longest one's timeout.
    """
    if not p.timeout:
        return None
    fin = max((t.timeout or 0 for t in p.finally_), default=0)
    if not fin or fin >= p.timeout:
        return {"pipeline": duration(p.timeout)}
    return {
        "pipeline": duration(p.timeout),
        "tasks": duration(p.timeout - fin),
        "finally": duration(fin),
    }


def _params_list(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def taskrun_sample(t: TaskSpec, values: Values = CATALOG) -> dict[str, Any]:
    """A TaskRun of the Task alone: required params, required workspaces on one PVC."""
    spec: dict[str, Any] = {"taskRef": {"kind": "Task", "name": t.name}}
    params = sample_params(t.params, values)
    if params:
        spec["params"] = _params_list(params)
    spaces = [w for w in t.workspaces if not w.optional]
    if spaces:
        spec["workspaces"] = [
            {"name": w.name, "persistentVolumeClaim": {"claimName": SOURCE_CLAIM}} for w in spaces
        ]
    spec["serviceAccountName"] = accounts.account_of(t.name)
    spec["podTemplate"] = _pod_template(bool(t.resources.gpu))
    return {
        "apiVersion": API,
        "kind": "TaskRun",
        "metadata": {"generateName": f"{t.name}-"},
        "spec": spec,
    }


def task_run_specs(p: PipelineSpec) -> list[dict[str, str]]:
    """``taskRunSpecs`` for the tasks whose account is not the ``taskRunTemplate``'s one.

    Only ``serviceAccountName``: node placement stays in ``taskRunTemplate`` (see
    :func:`pipelinerun_sample`).
    """
    return [
        {"pipelineTaskName": t.name, "serviceAccountName": accounts.account_of(t.task.name)}
        for t in p.all_tasks
        if accounts.account_of(t.task.name) != accounts.DEFAULT_ACCOUNT
    ]


def pipelinerun_sample(p: PipelineSpec, values: Values = CATALOG) -> dict[str, Any]:
    """A PipelineRun: a fresh PVC per run for ``source``; a GPU pipeline on GPU nodes.

    The ``source`` PVC comes from a ``volumeClaimTemplate``: it is created for the run and
    deleted with it (tektoncd/pipeline docs/workspaces.md, volumeClaimTemplate).

    GPU placement is in ``taskRunTemplate.podTemplate``, not per task: with the Affinity
    Assistant (default ``coschedule: workspaces``) every pod sharing the PVC follows the
    assistant pod's node, and the assistant takes ``nodeSelector`` and ``tolerations`` only
    from ``taskRunTemplate.podTemplate`` (pkg/reconciler/pipelinerun/affinity_assistant.go,
    ``affinityAssistantStatefulSet``; docs/affinityassistants.md). A GPU selector only on the
    train task would put the assistant, and so the whole run, on a node without a GPU. With
    the assistant off, a ReadWriteOnce PVC still keeps the run on one node, so the same holds.

    Each task's pods run as its kind's ServiceAccount (module docstring, :func:`task_run_specs`).
    """
    spec: dict[str, Any] = {"pipelineRef": {"name": p.name}}
    params = sample_params(p.params, values)
    if params:
        spec["params"] = _params_list(params)
    spaces = [w for w in p.workspaces if not w.optional]
    if spaces:
        claim = {
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": SOURCE_STORAGE}},
            }
        }
        spec["workspaces"] = [{"name": w.name, "volumeClaimTemplate": claim} for w in spaces]
    if budget := timeouts(p):
        spec["timeouts"] = budget
    gpu = any(t.task.resources.gpu for t in p.all_tasks)
    spec["taskRunTemplate"] = {
        "serviceAccountName": accounts.DEFAULT_ACCOUNT,
        "podTemplate": _pod_template(gpu),
    }
    if specs := task_run_specs(p):
        spec["taskRunSpecs"] = specs
    return {
        "apiVersion": API,
        "kind": "PipelineRun",
        "metadata": {"generateName": f"{p.name}-"},
        "spec": spec,
    }
