"""A Tekton v1 Pipeline / PipelineRun, executed as Tekton would (one machine, no cluster).

Semantics implemented, each as tektoncd/pipeline documents it (docs/*.md at v1.x):

- params: pipeline params with defaults, PipelineRun values over them; a pipeline task's params
  over its Task's defaults; a required one missing is an error before anything runs
  (docs/pipelines.md "Specifying Parameters"). Only ``type: string`` (arrays/objects: error).
- variables (docs/variables.md): pipeline level ``$(params.x)`` (also ``params["x"]``),
  ``$(tasks.T.results.R)``, ``$(context.pipelineRun.name)``, ``$(workspaces.W.bound)`` and, in
  ``finally``, ``$(tasks.status)`` / ``$(tasks.T.status)``; task level ``$(params.x)``,
  ``$(results.R.path)`` (``/tekton/results/R``), ``$(workspaces.W.path)`` (``mountPath``,
  default ``/workspace/W``; "" when an optional one is unbound), ``$(workspaces.W.bound)``,
  ``$(context.taskRun.name)``, ``$(context.pipelineRun.name)``. Substitution is one pass.
- ``matrix.params`` (docs/matrix.md): one TaskRun per combination, the first param varying
  slowest, shown as ``T[0]``, ``T[1]``…; ``T`` itself succeeds once all have, fails if any
  failed and all are done (pipelinerunresolution.go ``isFailure``); its string results are
  aggregated into arrays, read whole as ``$(tasks.T.results.R[*])`` into a ``type: array``
  param, which a step expands with ``$(params.x[*])`` as separate args (docs/matrix.md
  "Results from fanned out Matrixed PipelineTasks"). Arrays go nowhere else.
  ``$(...)`` that names none of these prefixes is left as is (a shell's ``$(date)``).
- order: ``runAfter`` plus every task whose results a task reads; ``when`` (``in``/``notin``)
  on resolved values; a task skipped by its ``when`` does not skip its ``runAfter`` dependents,
  but a task reading results of a skipped or failed task is skipped (docs/pipelines.md
  "Guard Task execution using when expressions"); a result a *succeeded* task did not write
  fails the run (``InvalidTaskResultReference``); pipeline results that cannot be resolved are
  left out (docs/pipelines.md "Emitting results from a Pipeline").
- steps run in order in one pod; ``script`` is written to a file and run (no shebang, after
  trimming, means ``#!/bin/sh``: docs/tasks.md "Running scripts within Steps",
  pkg/pod/script.go); ``workingDir`` has no default (the image's), ``/workspace`` is an
  emptyDir of the pod; ``securityContext`` of the step over the pod's
  (``taskRunTemplate.podTemplate``); param ``enum`` is enforced (InvalidParamValue).
- ``retries``, per-task ``timeout``; ``timeouts.pipeline`` / ``tasks`` / ``finally`` of the
  PipelineRun (docs/pipelineruns.md "Configuring a failure timeout"): without
  ``timeouts.tasks``/``finally`` the DAG may use the whole pipeline budget and ``finally`` gets
  what is left, and with only ``timeouts.finally`` the DAG gets ``pipeline - finally``
  (pipelinerun_types.go); the default is 60 minutes (``default-timeout-minutes``).
- workspaces of a PipelineRun: ``volumeClaimTemplate`` is a folder of the run, ``emptyDir`` a
  folder of each pod (it lives as long as the TaskRun, docs/workspaces.md);
  ``persistentVolumeClaim.claimName`` is a folder kept under the taskyard home (so a reused
  claim keeps its files, as a PVC does); ``secret``/``configMap`` need ``--workspace NAME=DIR``.
- ``taskRef`` by name (Tasks in the given files), ``taskSpec`` inline, or ``resolver: git``
  (``url``/``revision``/``pathInRepo``) read with ``git show`` from a local clone.
- no effect on one machine, accepted (:data:`_POD_IGNORED` and the ``ignored`` of each
  ``fields`` call): ``taskRunTemplate.serviceAccountName`` and ``taskRunSpecs[]``'
  ``serviceAccountName``, ``podTemplate`` node placement and ``metadata`` (who a pod runs as
  and how it is labelled matter to an API server and NetworkPolicies, neither of which is
  here); a ``taskRunSpecs`` entry whose ``pipelineTaskName`` is not a task of the Pipeline
  fails the run before anything starts, as Tekton's ``InvalidTaskRunSpecs``
  (pkg/reconciler/pipelinerun/resources/pipelinerunresolution.go ``ValidateTaskRunSpecs``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskyard.engines._common import (
    SECURITY_FIELDS,
    fields,
    git_show,
    go_duration,
    gpu_limit,
    items,
    local_repo,
    parse_yaml,
    security,
    shared_folder,
    text,
)
from taskyard.engines.pods import Container, Mount
from taskyard.engines.scheduler import Done, Fail, Node, OutputError, Skip, Start
from taskyard.errors import RunError
from taskyard.home import home
from taskyard.run.resolve import tasks_status
from taskyard.run.store import FAILED, SKIPPED, SUCCEEDED, RunRecord

API = "tekton.dev/v1"
RESULTS = "/tekton/results"
DEFAULT_TIMEOUT = 3600.0  # config-defaults default-timeout-minutes: 60
_VAR = re.compile(r"\$\(([^()]*)\)")
_PARAM = re.compile(r"""^params(?:\.([\w.-]+)|\[["']([\w.-]+)["']\])$""")
_KNOWN = ("params", "results", "workspaces", "tasks", "context", "steps")
_META = ("name", "generateName", "namespace", "labels", "annotations")
# Fields with no effect on one machine: node placement, and who the pods run as
# (serviceAccountName: RBAC of an API server there is none of here).
_POD_IGNORED = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "schedulerName")
STEP_FIELDS = ("name", "image", "command", "args", "env", "workingDir", "script", "securityContext")


def substitute(value: str, resolve: Callable[[str], str | None], where: str) -> str:
    """One pass over ``$(...)``; ``resolve`` returns None for a variable it does not know."""

    def one(m: re.Match[str]) -> str:
        body = m.group(1).strip()
        if body.split(".")[0].split("[")[0] not in _KNOWN:
            return m.group(0)
        got = resolve(body)
        if got is None:
            raise RunError(f"{where}: $({body}) cannot be resolved here")
        return got

    return _VAR.sub(one, value)


def _param_name(body: str) -> str | None:
    m = _PARAM.match(body)
    return (m.group(1) or m.group(2)) if m else None


@dataclass
class TaskDef:
    name: str
    spec: Mapping[str, Any]
    where: str


@dataclass
class PipelineTask:
    name: str
    task: TaskDef
    params: dict[str, str]
    workspaces: dict[str, tuple[str, str]]  # task workspace -> (pipeline workspace, subPath)
    when: list[tuple[str, str, list[str]]]
    final: bool
    consumed: set[str] = field(default_factory=set)
    task_params: dict[str, str | None] = field(default_factory=dict)  # the Task's defaults
    task_enums: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    arrays: set[str] = field(default_factory=set)  # the Task's ``type: array`` params
    matrix: list[dict[str, str]] = field(default_factory=list)  # the combinations


class TektonRun:
    """One run of a Pipeline (from a PipelineRun, or the Pipeline alone with ``-p``)."""

    def __init__(
        self,
        docs: list[tuple[Path, dict]],
        target: dict,
        params: Mapping[str, str],
        workspaces: Mapping[str, Path],
        *,
        git_repos: Mapping[str, Path] | None = None,
    ) -> None:
        self.docs = docs
        self.git_repos = dict(git_repos or {})
        self.user_workspaces = dict(workspaces)
        run_spec: Mapping[str, Any] = {}
        if target["kind"] == "PipelineRun":
            run_spec = self._pipelinerun(target)
            pipeline = self._pipeline_of(run_spec)
        else:
            pipeline = target
        meta = fields(pipeline.get("metadata"), "Pipeline.metadata", _META)
        self.pipeline = str(meta.get("name") or meta.get("generateName", "pipeline")).rstrip("-")
        fields(pipeline, "Pipeline", ("apiVersion", "kind", "metadata", "spec"))
        self.spec = fields(
            pipeline.get("spec"),
            "Pipeline.spec",
            ("params", "workspaces", "tasks", "finally", "results"),
            ("displayName", "description"),
        )
        self.enums: dict[str, list[str]] = {}
        self.params = self._params(run_spec, params)
        self.run_spec = run_spec
        self.ptasks: list[PipelineTask] = []
        for key, final in (("tasks", False), ("finally", True)):
            for i, raw in enumerate(items(self.spec.get(key), f"Pipeline.spec.{key}")):
                self.ptasks.append(self._pipeline_task(raw, f"spec.{key}[{i}]", final))
        self.nodes = [n for pt in self.ptasks for n in self._nodes(pt)]
        self.timeouts = self._timeouts(run_spec)
        self.pod_security = self._pod_security(run_spec)
        self._task_run_specs(run_spec)

    # ---- loading -----------------------------------------------------------------------
    def _pipelinerun(self, run: dict) -> Mapping[str, Any]:
        fields(run, "PipelineRun", ("apiVersion", "kind", "metadata", "spec"))
        fields(run.get("metadata"), "PipelineRun.metadata", _META)
        return fields(
            run.get("spec"),
            "PipelineRun.spec",
            (
                "pipelineRef",
                "pipelineSpec",
                "params",
                "workspaces",
                "timeouts",
                "taskRunTemplate",
                "taskRunSpecs",
            ),
        )

    def _pipeline_of(self, run_spec: Mapping[str, Any]) -> dict:
        if "pipelineSpec" in run_spec:
            return {
                "kind": "Pipeline",
                "metadata": {"name": "pipeline"},
                "spec": run_spec["pipelineSpec"],
            }
        ref = fields(
            run_spec.get("pipelineRef"),
            "PipelineRun.spec.pipelineRef",
            ("name", "resolver", "params"),
        )
        if ref.get("resolver"):
            return self._resolve(ref, "Pipeline", "PipelineRun.spec.pipelineRef")
        return self._named("Pipeline", text(ref.get("name", ""), "pipelineRef.name"))

    def _named(self, kind: str, name: str) -> dict:
        for _, doc in self.docs:
            if doc.get("kind") == kind and (doc.get("metadata") or {}).get("name") == name:
                api = doc.get("apiVersion")
                if api != API:
                    raise RunError(f"{kind} {name!r} is {api}; taskyard run reads {API} only")
                return doc
        raise RunError(
            f"no {kind} named {name!r} in the given files",
            "add the file that defines it with -f (e.g. -f tasks/ for the catalog's Tasks)",
        )

    def _resolve(self, ref: Mapping[str, Any], kind: str, where: str) -> dict:
        if ref["resolver"] != "git":
            raise RunError(
                f"{where}.resolver {ref['resolver']!r} is not supported by taskyard run (only git)"
            )
        p = {}
        for i, item in enumerate(items(ref.get("params"), f"{where}.params")):
            item = fields(item, f"{where}.params[{i}]", ("name", "value"))
            p[text(item.get("name"), f"{where}.params[{i}].name")] = text(
                item.get("value", ""), f"{where}.params[{i}].value"
            )
        for key in p:
            if key not in ("url", "revision", "pathInRepo"):
                raise RunError(
                    f"{where}.params {key!r} of the git resolver is not supported by taskyard run"
                )
        if not p.get("url") or not p.get("pathInRepo"):
            raise RunError(f"{where}: the git resolver needs url and pathInRepo")
        root = local_repo(p["url"], self.git_repos)
        source = git_show(root, p.get("revision") or "HEAD", p["pathInRepo"])
        docs = [
            d
            for d in parse_yaml(source, f"{p['url']}@{p.get('revision')}:{p['pathInRepo']}")
            if d.get("kind") == kind
        ]
        if len(docs) != 1:
            raise RunError(f"{where}: {p['pathInRepo']} holds {len(docs)} {kind}s, not one")
        return docs[0]

    def _params(self, run_spec: Mapping[str, Any], given: Mapping[str, str]) -> dict[str, str]:
        declared: dict[str, str | None] = {}
        for i, raw in enumerate(items(self.spec.get("params"), "Pipeline.spec.params")):
            where = f"Pipeline.spec.params[{i}]"
            p = fields(raw, where, ("name", "type", "default", "enum"), ("description",))
            if p.get("type", "string") != "string":
                raise RunError(
                    f"{where}.type {p['type']!r} is not supported by taskyard run (string only)"
                )
            name = text(p.get("name"), f"{where}.name")
            declared[name] = text(p["default"], f"{where}.default") if "default" in p else None
            self.enums[name] = [text(v, f"{where}.enum") for v in items(p.get("enum"), "enum")]
        values = dict(declared)
        for i, raw in enumerate(items(run_spec.get("params"), "PipelineRun.spec.params")):
            item = fields(raw, f"PipelineRun.spec.params[{i}]", ("name", "value"))
            values[text(item.get("name"), "name")] = text(item.get("value", ""), "value")
        for key, value in given.items():
            if key not in declared:
                raise RunError(
                    f"unknown param {key!r} for pipeline {self.pipeline!r}",
                    "known: " + (", ".join(declared) or "none"),
                )
            values[key] = value
        for key, value in values.items():
            allowed = self.enums.get(key)
            if allowed and value is not None and value not in allowed:
                raise RunError(
                    f"InvalidParamValue: param {key!r}: {value!r} is not one of "
                    f"{', '.join(allowed)}"
                )
        missing = [k for k, v in values.items() if v is None]
        if missing:
            raise RunError(f"missing required param {missing[0]!r}", f"-p {missing[0]}=VALUE")
        return {k: v for k, v in values.items() if v is not None}

    def _task_def(self, raw: Mapping[str, Any], where: str) -> TaskDef:
        if "taskSpec" in raw:
            return TaskDef(raw.get("name", "inline"), raw["taskSpec"], f"{where}.taskSpec")
        ref = fields(
            raw.get("taskRef"),
            f"{where}.taskRef",
            ("name", "kind", "resolver", "params", "apiVersion"),
        )
        if ref.get("kind", "Task") != "Task":
            raise RunError(f"{where}.taskRef.kind {ref['kind']!r} is not supported by taskyard run")
        doc = (
            self._resolve(ref, "Task", f"{where}.taskRef")
            if ref.get("resolver")
            else self._named("Task", text(ref.get("name", ""), f"{where}.taskRef.name"))
        )
        fields(doc, f"Task {doc['metadata']['name']}", ("apiVersion", "kind", "metadata", "spec"))
        return TaskDef(
            doc["metadata"]["name"], doc.get("spec") or {}, f"Task {doc['metadata']['name']!r}"
        )

    def _pipeline_task(self, raw: Any, where: str, final: bool) -> PipelineTask:
        raw = fields(
            raw,
            where,
            (
                "name",
                "taskRef",
                "taskSpec",
                "params",
                "workspaces",
                "runAfter",
                "when",
                "retries",
                "timeout",
                "matrix",
            ),
            ("displayName", "description"),
        )
        name = text(raw.get("name"), f"{where}.name")
        where = f"pipeline task {name!r}"
        task = self._task_def(raw, where)
        self._check_steps(task)
        params = {}
        for i, item in enumerate(items(raw.get("params"), f"{where}.params")):
            item = fields(item, f"{where}.params[{i}]", ("name", "value"))
            params[text(item.get("name"), "name")] = text(
                item.get("value", ""), f"{where}.params[{i}].value"
            )
        spaces = {}
        for i, item in enumerate(items(raw.get("workspaces"), f"{where}.workspaces")):
            item = fields(item, f"{where}.workspaces[{i}]", ("name", "workspace", "subPath"))
            spaces[item["name"]] = (item.get("workspace", item["name"]), item.get("subPath", ""))
        when = []
        for i, item in enumerate(items(raw.get("when"), f"{where}.when")):
            item = fields(item, f"{where}.when[{i}]", ("input", "operator", "values"))
            op = item.get("operator")
            if op not in ("in", "notin"):
                raise RunError(f"{where}.when[{i}].operator must be in or notin, got {op!r}")
            when.append(
                (
                    text(item.get("input", ""), "input"),
                    op,
                    [text(v, "values") for v in items(item.get("values"), "values")],
                )
            )
        pt = PipelineTask(name, task, params, spaces, when, final)
        pt.matrix = self._matrix(raw.get("matrix"), f"pipeline task {name!r}.matrix", final)
        self._check_task_params(pt)
        texts = [*params.values(), *(w[0] for w in when), *(v for w in when for v in w[2])]
        for t in texts:
            pt.consumed |= set(
                re.findall(r"\$\(\s*tasks\.([\w-]+)\.results\.[\w.-]+(?:\[\*\])?\s*\)", t)
            )
        pt.extra = {
            "runAfter": [
                text(x, "runAfter") for x in items(raw.get("runAfter"), f"{where}.runAfter")
            ],
            "retries": int(raw.get("retries") or 0),
            "timeout": go_duration(raw["timeout"], f"{where}.timeout")
            if raw.get("timeout")
            else None,
        }
        return pt

    @staticmethod
    def _matrix(raw: Any, where: str, final: bool) -> list[dict[str, str]]:
        """``matrix.params`` -> the combinations, in Tekton's order (docs/matrix.md)."""
        if raw is None:
            return []
        if final:
            raise RunError(f"{where}: a finally task cannot have a matrix")
        m = fields(raw, where, ("params",))  # matrix.include: "not supported" by fields()
        if not m.get("params"):
            raise RunError(f"{where} is not supported by taskyard run without matrix.params")
        combos: list[dict[str, str]] = [{}]
        for i, p in enumerate(items(m.get("params"), f"{where}.params")):
            p = fields(p, f"{where}.params[{i}]", ("name", "value"))
            values = p.get("value")
            if not isinstance(values, list) or not values:
                raise RunError(f"{where}.params[{i}].value must be a non-empty list of strings")
            name = text(p.get("name"), f"{where}.params[{i}].name")
            combos = [{**c, name: text(v, f"{where}.params[{i}].value")} for c in combos
                      for v in values]  # fmt: skip
        return combos

    @staticmethod
    def _check_steps(task: TaskDef) -> None:
        """The step fields, checked before anything runs (values are substituted later)."""
        for i, raw in enumerate(items(task.spec.get("steps"), f"{task.where}.steps")):
            where = f"{task.where}.steps[{i}]"
            s = fields(raw, where, STEP_FIELDS, ("computeResources", "imagePullPolicy"))
            for j, e in enumerate(items(s.get("env"), f"{where}.env")):
                fields(e, f"{where}.env[{j}]", ("name", "value"))
            fields(s.get("securityContext"), f"{where}.securityContext", SECURITY_FIELDS)

    def _check_task_params(self, pt: PipelineTask) -> None:
        where = f"pipeline task {pt.name!r}"
        declared = {}
        for i, raw in enumerate(items(pt.task.spec.get("params"), f"{pt.task.where}.params")):
            p = fields(
                raw,
                f"{pt.task.where}.params[{i}]",
                ("name", "type", "default", "enum"),
                ("description",),
            )
            kind = p.get("type", "string")
            if kind == "array" and "default" not in p:
                pt.arrays.add(p["name"])  # only a fanned-out task's results fill one here
            elif kind != "string":
                raise RunError(
                    f"{pt.task.where}.params[{i}].type {p['type']!r} is not supported by "
                    "taskyard run (string, and array without a default)"
                )
            declared[p["name"]] = p.get("default")
            pt.task_enums[p["name"]] = [text(v, "enum") for v in items(p.get("enum"), "enum")]
        for key in pt.params:
            if key not in declared:
                raise RunError(f"{where}: param {key!r} is not a param of {pt.task.where}")
        for key, default in declared.items():
            if default is None and key not in pt.params and not any(key in c for c in pt.matrix):
                raise RunError(f"{where}: required param {key!r} of {pt.task.where} is not bound")
        pt.task_params = declared

    def _nodes(self, pt: PipelineTask) -> list[Node]:
        """The task's node; with a matrix, one per combination and the join ``T`` after them."""
        node = self._node(pt)
        if not pt.matrix:
            return [node]
        trials = [
            Node(
                name=f"{pt.name}[{i}]",
                ref=node.ref,
                deps=node.deps,
                retries=node.retries,
                timeout=node.timeout,
                extra={"pt": pt, "combination": c, "pod": f"{pt.name}.{i}"},
            )
            for i, c in enumerate(pt.matrix)
        ]
        join = Node(
            name=pt.name,
            ref=node.ref,
            deps=frozenset(t.name for t in trials),
            extra={"pt": pt, "trials": [t.name for t in trials]},
            join=True,
        )
        return [*trials, join]

    def _join(self, node: Node, rec: RunRecord) -> Skip | Fail | Done:
        trials = [rec.tasks[t] for t in node.extra["trials"]]
        bad = [t for t in trials if t.state == FAILED]
        if bad:
            return Fail(f"trial {bad[0].name} failed: {bad[0].reason}")
        if any(t.state != SUCCEEDED for t in trials):
            return Skip("not every trial ran", "parent")
        names = set.intersection(*(set(t.results) for t in trials))
        results = {n: json.dumps([t.results[n] for t in trials]) for n in sorted(names)}
        return Done(results, f"{len(trials)} trials")

    def _node(self, pt: PipelineTask) -> Node:
        extra = pt.extra
        names = {p.name for p in self.ptasks} | {pt.name}
        deps = set() if pt.final else set(extra["runAfter"]) | pt.consumed
        for d in deps:
            if d not in names or any(p.name == d and p.final for p in self.ptasks):
                raise RunError(
                    f"pipeline task {pt.name!r}: runAfter/result names unknown task {d!r}"
                )
        return Node(
            name=pt.name,
            ref=pt.task.name,
            deps=frozenset(deps),
            final=pt.final,
            retries=extra["retries"],
            timeout=extra["timeout"],
            extra={"pt": pt},
        )

    def _timeouts(
        self, run_spec: Mapping[str, Any]
    ) -> tuple[float | None, float | None, float | None]:
        t = fields(
            run_spec.get("timeouts"), "PipelineRun.spec.timeouts", ("pipeline", "tasks", "finally")
        )
        pipeline = (
            go_duration(t["pipeline"], "timeouts.pipeline") if "pipeline" in t else DEFAULT_TIMEOUT
        )
        tasks = go_duration(t["tasks"], "timeouts.tasks") if "tasks" in t else None
        fin = go_duration(t["finally"], "timeouts.finally") if "finally" in t else None
        if pipeline and (tasks or 0) + (fin or 0) > pipeline:
            raise RunError("PipelineRun.spec.timeouts: tasks + finally must not exceed pipeline")
        if pipeline and fin and not tasks:  # the DAG gets the rest (pipelinerun_types.go)
            tasks = pipeline - fin
        return tasks or None, fin or None, pipeline or None

    def _pod_security(self, run_spec: Mapping[str, Any]) -> Mapping[str, Any]:
        tmpl = fields(
            run_spec.get("taskRunTemplate"),
            "PipelineRun.spec.taskRunTemplate",
            ("podTemplate",),
            ("serviceAccountName",),
        )
        pod = fields(
            tmpl.get("podTemplate"),
            "taskRunTemplate.podTemplate",
            ("securityContext",),
            _POD_IGNORED,
        )
        return fields(
            pod.get("securityContext"),
            "podTemplate.securityContext",
            ("runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "seccompProfile"),
            ("supplementalGroups",),
        )

    def _task_run_specs(self, run_spec: Mapping[str, Any]) -> None:
        """``taskRunSpecs``: what one machine has no use for (the account, node placement, pod
        labels) is accepted and has no effect; each must name a task of the Pipeline, or the
        run fails before anything starts, as Tekton fails it (InvalidTaskRunSpecs:
        pkg/reconciler/pipelinerun/resources/pipelinerunresolution.go ``ValidateTaskRunSpecs``,
        over ``tasks`` and ``finally``)."""
        names = {pt.name for pt in self.ptasks}
        for i, raw in enumerate(
            items(run_spec.get("taskRunSpecs"), "PipelineRun.spec.taskRunSpecs")
        ):
            where = f"PipelineRun.spec.taskRunSpecs[{i}]"
            trs = fields(
                raw, where, ("pipelineTaskName",), ("serviceAccountName", "podTemplate", "metadata")
            )
            fields(trs.get("podTemplate"), f"{where}.podTemplate", (), _POD_IGNORED)
            fields(trs.get("metadata"), f"{where}.metadata", (), ("labels", "annotations"))
            name = text(trs.get("pipelineTaskName", ""), f"{where}.pipelineTaskName")
            if name not in names:
                raise RunError(
                    f"InvalidTaskRunSpecs: pipelineRun's taskrunSpecs defined wrong taskName: "
                    f"{name!r}, does not exist in Pipeline"
                )

    # ---- the run -----------------------------------------------------------------------
    def bind(self, rec: RunRecord) -> None:
        """Create the run's workspace folders (called once the run has its folder)."""
        self.rec = rec
        self.folders: dict[str, Path | None] = {}
        self.per_pod: set[str] = set()
        bound = {}
        for i, raw in enumerate(
            items(self.run_spec.get("workspaces"), "PipelineRun.spec.workspaces")
        ):
            w = fields(
                raw,
                f"PipelineRun.spec.workspaces[{i}]",
                (
                    "name",
                    "volumeClaimTemplate",
                    "emptyDir",
                    "persistentVolumeClaim",
                    "secret",
                    "configMap",
                    "subPath",
                ),
            )
            bound[w["name"]] = w
        for i, raw in enumerate(items(self.spec.get("workspaces"), "Pipeline.spec.workspaces")):
            w = fields(
                raw, f"Pipeline.spec.workspaces[{i}]", ("name", "optional"), ("description",)
            )
            name = w["name"]
            if name in self.user_workspaces:
                self.folders[name] = self.user_workspaces[name]
            elif name in bound:
                self.folders[name] = self._volume(name, bound[name])
            elif w.get("optional"):
                self.folders[name] = None
            elif self.run_spec:
                raise RunError(
                    f"workspace {name!r} of the pipeline is not bound by the PipelineRun"
                )
            else:
                self.folders[name] = shared_folder(rec.path / "workspaces" / name)
        rec.workspaces = {k: str(v) if v else None for k, v in self.folders.items()}

    def _volume(self, name: str, w: Mapping[str, Any]) -> Path:
        if "emptyDir" in w:
            # An emptyDir lives as long as the TaskRun (docs/workspaces.md): one per pod.
            self.per_pod.add(name)
            path = self.rec.path / "pods"
        elif "volumeClaimTemplate" in w:
            path = shared_folder(self.rec.path / "workspaces" / name)
        elif "persistentVolumeClaim" in w:
            claim = fields(
                w["persistentVolumeClaim"], "persistentVolumeClaim", ("claimName", "readOnly")
            )
            path = shared_folder(home() / "claims" / text(claim.get("claimName"), "claimName"))
        else:
            kind = "secret" if "secret" in w else "configMap"
            raise RunError(
                f"workspace {name!r} is a {kind}: bind it to a folder with --workspace {name}=DIR"
            )
        if w.get("subPath"):
            path = shared_folder(path / w["subPath"])
        return path

    def decide(self, node: Node, rec: RunRecord, attempt: int) -> Skip | Fail | Start | Done:
        pt: PipelineTask = node.extra["pt"]
        if "trials" in node.extra:
            return self._join(node, rec)
        tasks = rec.tasks
        for dep in sorted(pt.consumed):
            if tasks[dep].state != SUCCEEDED:
                return Skip(
                    f"results of task {dep!r} are missing ({tasks[dep].state.lower()})", "results"
                )
        if not pt.final:
            for dep in sorted(node.deps):
                if tasks[dep].state == SKIPPED and tasks[dep].skip_kind != "when":
                    return Skip(f"parent task {dep!r} was skipped", "parent")
        resolve = self._pipeline_vars(pt, rec)
        where = f"pipeline task {pt.name!r}"
        for inp, op, values in pt.when:
            got = substitute(inp, resolve, f"{where}, when")
            want = [substitute(v, resolve, f"{where}, when") for v in values]
            if (got in want) != (op == "in"):
                return Skip(f"when {inp} ({got!r}) {op} {want} is false")
        params = {k: v for k, v in pt.task_params.items() if v is not None}
        params.update(node.extra.get("combination", {}))
        for key, value in pt.params.items():
            whole = re.fullmatch(r"\$\(\s*(tasks\.[\w-]+\.results\.[\w.-]+)\[\*\]\s*\)", value)
            if (key in pt.arrays) != bool(whole):
                return Fail(
                    f"{where}, params.{key}: an array param takes a fanned-out task's results "
                    "whole ($(tasks.T.results.R[*])), and nothing else does"
                )
            if whole:  # the join's results: JSON lists
                got = resolve(whole.group(1))
                if got is None:
                    return Fail(f"{where}: {value} cannot be resolved here")
                params[key] = got
                continue
            params[key] = substitute(value, resolve, f"{where}, params.{key}")
            allowed = pt.task_enums.get(key)
            if allowed and params[key] not in allowed:
                return Fail(
                    f"InvalidParamValue: param {key!r}: {params[key]!r} is not one of "
                    f"{', '.join(allowed)}"
                )
        return Start(self._containers(node, pt, params, attempt))

    def _pipeline_vars(self, pt: PipelineTask, rec: RunRecord) -> Callable[[str], str | None]:
        def resolve(body: str) -> str | None:
            if (name := _param_name(body)) is not None:
                return self.params.get(name)
            if body == "context.pipelineRun.name":
                return rec.id
            m = re.match(r"^tasks\.([\w-]+)\.results\.([\w.-]+)$", body)
            if m:
                t = rec.tasks.get(m.group(1))
                if t is None or t.state != SUCCEEDED:
                    return None
                if m.group(2) not in t.results:
                    raise RunError(
                        f"InvalidTaskResultReference: task {m.group(1)!r} succeeded without "
                        f"writing result {m.group(2)!r}"
                    )
                return t.results[m.group(2)]
            m = re.match(r"^workspaces\.([\w-]+)\.bound$", body)
            if m and m.group(1) in self.folders:
                return "true" if self.folders[m.group(1)] is not None else "false"
            if pt.final and body == "tasks.status":
                return tasks_status([rec.tasks[p.name] for p in self.ptasks if not p.final])
            m = re.match(r"^tasks\.([\w-]+)\.status$", body)
            if pt.final and m and m.group(1) in rec.tasks:
                state = rec.tasks[m.group(1)].state
                return state if state in (SUCCEEDED, FAILED) else "None"
            return None

        return resolve

    def _containers(
        self, node: Node, pt: PipelineTask, params: dict[str, str], attempt: int
    ) -> list[Container]:
        spec = fields(
            pt.task.spec,
            f"{pt.task.where}.spec",
            ("params", "results", "workspaces", "steps"),
            ("displayName", "description"),
        )
        pod_name = node.extra.get("pod", pt.name)  # a trial's own: `train.0`
        pod = self.rec.path / "pods" / f"{pod_name}-{attempt}"
        results_dir = shared_folder(pod / "results")
        scratch = shared_folder(pod / "workspace")
        mounts = [Mount(scratch, "/workspace"), Mount(results_dir, RESULTS)]
        paths: dict[str, str] = {}
        for i, raw in enumerate(items(spec.get("workspaces"), f"{pt.task.where}.workspaces")):
            w = fields(
                raw,
                f"{pt.task.where}.workspaces[{i}]",
                ("name", "mountPath", "readOnly", "optional"),
                ("description",),
            )
            binding = pt.workspaces.get(w["name"])
            host = None
            if binding is not None:
                host = self.folders.get(binding[0])
                if binding[0] in self.per_pod:
                    host = shared_folder(pod / "emptydir" / binding[0])
                if host is not None and binding[1]:
                    host = shared_folder(host / binding[1])
            if host is None:
                if not w.get("optional"):
                    raise RunError(
                        f"pipeline task {pt.name!r}: workspace {w['name']!r} is not bound"
                    )
                paths[w["name"]] = ""
                continue
            paths[w["name"]] = w.get("mountPath") or f"/workspace/{w['name']}"
            mounts.append(Mount(host, paths[w["name"]], bool(w.get("readOnly"))))
        results = [
            fields(r, f"{pt.task.where}.results[{i}]", ("name", "type"), ("description",))
            for i, r in enumerate(items(spec.get("results"), "results"))
        ]
        node.extra["results"] = [r["name"] for r in results]
        node.extra["results_dir"] = results_dir
        for r in results:
            if r.get("type", "string") != "string":
                raise RunError(
                    f"{pt.task.where}: result type {r['type']!r} is not supported by taskyard run"
                )

        def resolve(body: str) -> str | None:
            if (name := _param_name(body)) is not None:
                return params.get(name)
            m = re.match(r"^results\.([\w.-]+)\.path$", body)
            if m and m.group(1) in node.extra["results"]:
                return f"{RESULTS}/{m.group(1)}"
            m = re.match(r"^workspaces\.([\w-]+)\.(path|bound)$", body)
            if m and m.group(1) in paths:
                value = paths[m.group(1)]
                return value if m.group(2) == "path" else ("true" if value else "false")
            if body == "context.taskRun.name":
                return f"{self.rec.id}-{pt.name}"
            if body == "context.pipelineRun.name":
                return self.rec.id
            return None

        out = []
        steps = items(spec.get("steps"), f"{pt.task.where}.steps")
        if not steps:
            raise RunError(f"{pt.task.where} has no steps")
        for i, raw in enumerate(steps):
            where = f"{pt.task.where}.steps[{i}]"
            s = fields(raw, where, STEP_FIELDS, ("computeResources", "imagePullPolicy"))
            sub = lambda v, f=where: substitute(text(v, f), resolve, f)  # noqa: E731
            env = {}
            for j, e in enumerate(items(s.get("env"), f"{where}.env")):
                e = fields(e, f"{where}.env[{j}]", ("name", "value"))
                env[e["name"]] = sub(e.get("value", ""))
            command = [sub(c) for c in items(s.get("command"), f"{where}.command")]
            args = []
            for a in items(s.get("args"), f"{where}.args"):
                star = re.fullmatch(r"\$\(\s*params\.([\w-]+)\[\*\]\s*\)", text(a, where))
                if star and star.group(1) in pt.arrays:  # expanded into separate args
                    args += [str(v) for v in json.loads(params[star.group(1)])]
                else:
                    args.append(sub(a))
            step_name = s.get("name") or f"step-{i}"
            script = None
            if "script" in s:
                if command:
                    raise RunError(f"{where}: script and command cannot both be set")
                script = sub(s["script"])
                if not script.strip().startswith("#!"):  # pkg/pod/script.go trims first
                    script = "#!/bin/sh\nset -e\n" + script
            sec = {
                **self.pod_security,
                **fields(s.get("securityContext"), f"{where}.securityContext", SECURITY_FIELDS),
            }
            out.append(
                Container(
                    name=f"{pod_name}-{step_name}",
                    image=sub(s.get("image", "")),
                    command=command,
                    args=args,
                    env=env,
                    # No default: the image's WORKDIR (docs/pipeline-api.md, Step.workingDir).
                    working_dir=sub(s.get("workingDir", "")),
                    **security(sec, f"{where}.securityContext"),
                    mounts=list(mounts),
                    gpus=gpu_limit(s.get("computeResources")),
                    script=script,
                )
            )
        return out

    def outputs(self, node: Node, files: dict[str, str | None]) -> dict[str, str]:
        out = {}
        folder: Path = node.extra["results_dir"]
        for name in node.extra.get("results", []):
            path = folder / name
            if path.is_file():
                out[name] = path.read_bytes().decode(errors="replace")
        if sum(len(v) for v in out.values()) > 4096:
            raise OutputError("results exceed Tekton's 4096-byte termination message budget")
        return out

    def deadlines(self) -> tuple[float | None, float | None, float | None]:
        return self.timeouts

    def stopping(self, rec: RunRecord) -> str:
        """After a DAG task fails no new one starts (docs/pipelines.md, "finally" section)."""
        failed = [t.name for t in rec.tasks.values() if t.state == FAILED and not t.finally_]
        return f"task {failed[0]!r} failed" if failed else ""

    def outcome(self, rec: RunRecord) -> tuple[bool, str]:
        failed = [t.name for t in rec.tasks.values() if t.state == FAILED]
        if failed:
            return True, "Failed: task " + ", ".join(failed) + " failed"
        skipped = any(t.state == SKIPPED for t in rec.tasks.values())
        return False, "Completed" if skipped else "Succeeded"

    def retries_on(self, node: Node, kind: str) -> bool:
        return True  # `retries` re-runs a failed TaskRun whatever failed it

    def finish(self, rec: RunRecord) -> None:
        resolve = self._pipeline_vars(PipelineTask("", TaskDef("", {}, ""), {}, {}, [], False), rec)
        for i, raw in enumerate(items(self.spec.get("results"), "Pipeline.spec.results")):
            r = fields(
                raw, f"Pipeline.spec.results[{i}]", ("name", "value", "type"), ("description",)
            )
            try:
                rec.results[r["name"]] = substitute(
                    text(r.get("value", ""), "value"), resolve, "result"
                )
            except RunError:
                continue  # a result of a skipped/failed task: left out, as Tekton does
