"""An Argo WorkflowTemplate / Workflow, executed as Argo v4 would (one machine, no cluster).

Semantics implemented, as argo-workflows documents them (docs/*.md at v4.1.2):

- ``spec.arguments.parameters`` are the workflow's params (``-p`` over ``value``; a param
  without a value must be given; ``enum`` is enforced, docs/walk-through/parameters.md);
  a container template's ``inputs.parameters`` take the DAG task's ``arguments`` over their
  ``default``; one not supplied is an error.
- templates: ``dag`` (tasks with ``template``, ``arguments``, ``depends`` or
  ``dependencies``, ``when``) and ``container``; the entrypoint is a DAG; ``onExit`` names a
  DAG run after the entrypoint whatever its outcome, with ``{{workflow.status}}``
  (docs/walk-through/exit-handlers.md).
- variables (docs/variables.md): ``{{inputs.parameters.x}}``, ``{{workflow.parameters.x}}``,
  ``{{workflow.name}}``, ``{{workflow.status}}`` (exit handler),
  ``{{tasks.T.outputs.parameters.P}}``, ``{{workflow.outputs.parameters.G}}`` (``globalName``);
  a reference that cannot be resolved -- an output of a task that was skipped -- fails the
  task that holds it, as Argo does. Expression tags ``{{=...}}`` are not supported.
- ``depends`` / ``when``: engines/exprs.py; a task whose ``depends`` is false is ``Omitted``
  (shown as Skipped); ``when`` false: ``Skipped``. A DAG fails when a *leaf* branch failed
  (workflow/controller/dag.go ``assessDAGPhase``: a skipped or omitted task inherits its
  parents' phase), so a ``depends: "a.Failed"`` handler can save it; once it has failed no new
  task starts (``failFast``, the default).
- an argument that is only a reference to an output of a task that did not run takes the
  producer's ``valueFrom.default``, else it is not supplied and the input's default applies
  (controller/scope.go, common/util.go); anywhere else such a reference fails the task.
- outputs: ``valueFrom.path`` is read from the container after it exits, less one trailing
  newline (workflow/executor/executor.go), ``default`` when the file is missing, an error
  otherwise; ``retryPolicy`` OnFailure (default) / OnError / Always decides what is retried.
- ``withItems`` (docs/walk-through/loops.md): one pod per item, ``{{item}}`` /
  ``{{item.KEY}}`` in its arguments, shown as ``T[0]``, ``T[1]``…; ``T`` fails if one failed
  (failFast), and ``{{tasks.T.outputs.parameters.P}}`` is the JSON list of the items' values in
  item order (docs/variables.md; workflow/controller/operator.go ``processAggregateNodeOutputs``,
  ``aggregatedJSONValueList``: the values as strings unless every one is a JSON map or list).
- ``emptyDir`` volumes are each pod's own.
- ``retryStrategy.limit`` retries the pod; a template's ``activeDeadlineSeconds`` limits each
  pod; the workflow's limits the entrypoint; the exit handler runs after it either way
  (workflow/controller/operator.go runs ``onExit`` unless the workflow is *terminated*).
- volumes: ``volumeClaimTemplates`` are folders of the run;
  ``persistentVolumeClaim`` a folder kept under the taskyard home; a ``secret`` is the folder
  ``--workspace NAME=DIR`` names, or an empty one when it is ``optional`` (a missing optional
  Secret mounts empty); ``volumeMounts`` with ``mountPath``, ``readOnly``, ``subPath``.
- ``securityContext`` of the workflow (the pod's) under the container's.
- no effect on one machine, accepted (:data:`_SPEC_IGNORED`, :data:`_TEMPLATE_IGNORED`):
  who the pods and the executor run as (``serviceAccountName``,
  ``automountServiceAccountToken``, ``executor.serviceAccountName``: RBAC of an API server),
  pod labels (``podMetadata``, a template's ``metadata``: NetworkPolicies), node placement
  and garbage collection.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from taskyard.engines._common import (
    SECURITY_FIELDS,
    Unsupported,
    fields,
    gpu_limit,
    items,
    security,
    shared_folder,
    text,
)
from taskyard.engines.exprs import depends_tasks, evaluate_depends, evaluate_when
from taskyard.engines.pods import Container, Mount
from taskyard.engines.scheduler import Done, Fail, Node, OutputError, Skip, Start
from taskyard.errors import RunError
from taskyard.home import home
from taskyard.run.store import CANCELLED, FAILED, SKIPPED, SUCCEEDED, RunRecord

KINDS = ("WorkflowTemplate", "ClusterWorkflowTemplate", "Workflow")
_TAG = re.compile(r"\{\{(.*?)\}\}")
_META = ("name", "generateName", "namespace", "labels", "annotations")
# Fields with no effect on one machine, accepted as written.
_SPEC_IGNORED = (
    # Who the pods and the executor run as: RBAC of an API server there is none of here.
    "serviceAccountName",
    "executor",
    "automountServiceAccountToken",
    "podGC",
    "volumeClaimGC",
    "ttlStrategy",
    "nodeSelector",
    "tolerations",
    "affinity",
    "podMetadata",  # pod labels/annotations: no NetworkPolicy here
    "workflowMetadata",
    "archiveLogs",
)
# A template's fields with no effect on one machine: pod metadata, placement, accounts.
_TEMPLATE_IGNORED = (
    "metadata",
    "nodeSelector",
    "tolerations",
    "affinity",
    "serviceAccountName",
    "automountServiceAccountToken",
    "executor",
)
CONTAINER_FIELDS = (
    "name",
    "image",
    "command",
    "args",
    "env",
    "workingDir",
    "volumeMounts",
    "securityContext",
)
_STATE = {SUCCEEDED: "Succeeded", FAILED: "Failed", SKIPPED: "Skipped"}


class Unresolved(RunError):
    """A tag that names nothing known now (an output of a task that did not run, a typo)."""


def substitute(value: str, resolve: Callable[[str], str | None], where: str) -> str:
    def one(m: re.Match[str]) -> str:
        body = m.group(1).strip()
        if body.startswith("="):
            raise RunError(
                f"{where}: expression tags {{{{={body[1:]}}}}} are not supported by taskyard run"
            )
        got = resolve(body)
        if got is None:
            raise Unresolved(f"{where}: Unable to resolve: {{{{{body}}}}}")
        return got

    return _TAG.sub(one, value)


def output_params(tmpl: Mapping[str, Any]) -> list[tuple[str, str, Any, str | None]]:
    """(name, valueFrom.path, valueFrom.default or None, globalName) of each output param."""
    where = f"template {tmpl['name']!r}"
    outs = fields(tmpl.get("outputs"), f"{where}.outputs", ("parameters",))
    out = []
    for j, raw in enumerate(items(outs.get("parameters"), f"{where}.outputs.parameters")):
        at = f"{where}.outputs.parameters[{j}]"
        p = fields(raw, at, ("name", "valueFrom", "globalName"), ("description",))
        vf = fields(p.get("valueFrom"), f"{at}.valueFrom", ("path", "default"))
        if "path" not in vf:
            raise Unsupported(f"{at}: only valueFrom.path is supported by taskyard run")
        out.append(
            (text(p.get("name"), f"{at}.name"), vf["path"], vf.get("default"), p.get("globalName"))
        )
    return out


class ArgoRun:
    """One run of a WorkflowTemplate (or a Workflow, inline or by ``workflowTemplateRef``)."""

    def __init__(
        self,
        docs: list[tuple[Path, dict]],
        target: dict,
        params: Mapping[str, str],
        workspaces: Mapping[str, Path],
    ) -> None:
        self.user_workspaces = dict(workspaces)
        fields(target, target["kind"], ("apiVersion", "kind", "metadata", "spec"))
        meta = fields(target.get("metadata"), f"{target['kind']}.metadata", _META)
        spec = dict(target.get("spec") or {})
        run_args: list = []
        if "workflowTemplateRef" in spec:
            ref = fields(
                spec.pop("workflowTemplateRef"),
                "spec.workflowTemplateRef",
                ("name", "clusterScope"),
            )
            kind = "ClusterWorkflowTemplate" if ref.get("clusterScope") else "WorkflowTemplate"
            tmpl = self._named(docs, kind, text(ref.get("name"), "workflowTemplateRef.name"))
            run_args = items(
                fields(spec.pop("arguments", None), "spec.arguments", ("parameters",)).get(
                    "parameters"
                ),
                "spec.arguments.parameters",
            )
            fields(spec, "Workflow.spec", (), _SPEC_IGNORED)
            meta = tmpl.get("metadata") or {}
            spec = dict(tmpl.get("spec") or {})
        self.pipeline = str(meta.get("name") or meta.get("generateName", "workflow")).rstrip("-")
        self.spec = fields(
            spec,
            "spec",
            (
                "entrypoint",
                "onExit",
                "arguments",
                "templates",
                "volumeClaimTemplates",
                "volumes",
                "activeDeadlineSeconds",
                "securityContext",
                "parallelism",
            ),
            _SPEC_IGNORED,
        )
        fields(self.spec.get("executor"), "spec.executor", (), ("serviceAccountName",))
        self.templates = {}
        for i, raw in enumerate(items(self.spec.get("templates"), "spec.templates")):
            name = text((raw or {}).get("name"), f"spec.templates[{i}].name")
            self.templates[name] = raw
        self.params = self._params(run_args, params)
        self.parallelism = int(self.spec.get("parallelism") or 0) or None
        self.pod_security = fields(
            self.spec.get("securityContext"),
            "spec.securityContext",
            ("runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "seccompProfile"),
            ("supplementalGroups",),
        )
        entry = text(self.spec.get("entrypoint"), "spec.entrypoint")
        self.nodes = self._dag(entry, final=False)
        if self.spec.get("onExit"):
            self.nodes += self._dag(text(self.spec["onExit"], "spec.onExit"), final=True)
        names = [n.name for n in self.nodes]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise Unsupported(
                f"task {clash[0]!r} is in both the entrypoint and the onExit DAG: "
                "taskyard run needs task names unique across them"
            )
        self._by_name = {n.name: n for n in self.nodes}
        self.globals: dict[str, str] = {}

    @staticmethod
    def _named(docs: list[tuple[Path, dict]], kind: str, name: str) -> dict:
        for _, doc in docs:
            if doc.get("kind") == kind and (doc.get("metadata") or {}).get("name") == name:
                return doc
        raise RunError(f"no {kind} named {name!r} in the given files", "add its file with -f")

    def _params(self, run_args: list, given: Mapping[str, str]) -> dict[str, str]:
        declared: dict[str, dict] = {}
        args = fields(self.spec.get("arguments"), "spec.arguments", ("parameters",))
        for i, raw in enumerate(items(args.get("parameters"), "spec.arguments.parameters")):
            p = fields(
                raw, f"spec.arguments.parameters[{i}]", ("name", "value", "enum"), ("description",)
            )
            declared[text(p.get("name"), "name")] = p
        values = {k: text(p["value"], k) for k, p in declared.items() if "value" in p}
        for i, raw in enumerate(run_args):
            p = fields(raw, f"Workflow.spec.arguments.parameters[{i}]", ("name", "value"))
            values[text(p.get("name"), "name")] = text(p.get("value", ""), "value")
        for key, value in given.items():
            if key not in declared:
                raise RunError(
                    f"unknown param {key!r} for workflow {self.pipeline!r}",
                    "known: " + (", ".join(declared) or "none"),
                )
            values[key] = value
        for key, p in declared.items():
            if key not in values:
                raise RunError(
                    f"spec.arguments.parameters.{key}.value is required", f"-p {key}=VALUE"
                )
            enum = [text(v, key) for v in items(p.get("enum"), f"{key}.enum")]
            if enum and values[key] not in enum:
                raise RunError(f"param {key!r}: {values[key]!r} is not one of {', '.join(enum)}")
        return values

    def _dag(self, name: str, final: bool) -> list[Node]:
        if name not in self.templates:
            raise RunError(f"template {name!r} is not defined")
        where = f"template {name!r}"
        tmpl = fields(self.templates[name], where, ("name", "dag"), ("metadata",))
        if "dag" not in tmpl:
            raise RunError(
                f"{where}: the entrypoint and onExit must be dag templates for taskyard run"
            )
        dag = fields(tmpl["dag"], f"{where}.dag", ("tasks", "failFast"))
        if dag.get("failFast") is False:
            raise RunError(f"{where}.dag.failFast: false is not supported by taskyard run")
        nodes = []
        raw_tasks = items(dag.get("tasks"), f"{where}.dag.tasks")
        names = {text((t or {}).get("name"), "name") for t in raw_tasks}
        for i, raw in enumerate(raw_tasks):
            t = fields(
                raw,
                f"{where}.dag.tasks[{i}]",
                ("name", "template", "arguments", "depends", "dependencies", "when", "withItems"),
            )
            tname = t["name"]
            twhere = f"dag task {tname!r}"
            if "depends" in t and "dependencies" in t:
                raise RunError(f"{twhere}: depends and dependencies cannot both be set")
            depends = text(t.get("depends", ""), f"{twhere}.depends")
            if "dependencies" in t:
                depends = " && ".join(
                    text(d, "dependencies") for d in items(t["dependencies"], "dependencies")
                )
            deps = depends_tasks(depends, twhere) if depends.strip() else set()
            unknown = deps - names
            if unknown:
                raise RunError(f"{twhere}: depends names unknown task {sorted(unknown)[0]!r}")
            args = {}
            a = fields(t.get("arguments"), f"{twhere}.arguments", ("parameters",))
            for j, p in enumerate(items(a.get("parameters"), f"{twhere}.arguments.parameters")):
                p = fields(p, f"{twhere}.arguments.parameters[{j}]", ("name", "value"))
                args[p["name"]] = text(p.get("value", ""), f"{twhere}.arguments.{p['name']}")
            template = self._container_template(text(t.get("template"), f"{twhere}.template"))
            self._check_container(template)
            retry = fields(
                template.get("retryStrategy"),
                f"template {template['name']!r}.retryStrategy",
                ("limit", "retryPolicy"),
            )
            policy = retry.get("retryPolicy", "OnFailure")
            if policy not in ("Always", "OnFailure", "OnError"):
                raise Unsupported(f"retryPolicy {policy!r} is not supported by taskyard run")
            if retry and "limit" not in retry:
                raise Unsupported(
                    f"template {template['name']!r}.retryStrategy without a limit (Argo retries "
                    "for ever) is not supported by taskyard run"
                )
            limit = text(
                retry.get("limit", "0"), f"template {template['name']!r}.retryStrategy.limit"
            )
            if not limit.isdigit():
                raise RunError(
                    f"template {template['name']!r}.retryStrategy.limit {limit!r} is not a number"
                )
            deadline = template.get("activeDeadlineSeconds")
            nodes += _fan_out(
                t.get("withItems"),
                twhere,
                Node(
                    name=tname,
                    ref=template["name"],
                    deps=frozenset(deps),
                    final=final,
                    retries=int(limit),
                    timeout=float(deadline) if deadline not in (None, "") else None,
                    extra={
                        "retry_policy": policy,
                        "depends": depends,
                        "when": t.get("when", ""),
                        "args": args,
                        "template": template,
                    },
                ),
            )
        return nodes

    def _container_template(self, name: str) -> dict:
        if name not in self.templates:
            raise RunError(f"template {name!r} is not defined")
        where = f"template {name!r}"
        return dict(
            fields(
                self.templates[name],
                where,
                (
                    "name",
                    "container",
                    "inputs",
                    "outputs",
                    "retryStrategy",
                    "activeDeadlineSeconds",
                    "securityContext",
                ),
                _TEMPLATE_IGNORED,
            )
        )

    @staticmethod
    def _check_container(tmpl: dict) -> None:
        """The container's fields, checked before anything runs (values come later)."""
        where = f"template {tmpl['name']!r}"
        if "container" not in tmpl:
            raise RunError(
                f"{where}: only dag and container templates are supported by taskyard run"
            )
        fields(tmpl.get("executor"), f"{where}.executor", (), ("serviceAccountName",))
        c = fields(
            tmpl["container"],
            f"{where}.container",
            CONTAINER_FIELDS,
            ("resources", "imagePullPolicy"),
        )
        for j, e in enumerate(items(c.get("env"), f"{where}.container.env")):
            fields(e, f"{where}.container.env[{j}]", ("name", "value"))
        fields(c.get("securityContext"), f"{where}.container.securityContext", SECURITY_FIELDS)
        fields(tmpl.get("inputs"), f"{where}.inputs", ("parameters",))
        output_params(tmpl)

    # ---- the run -----------------------------------------------------------------------
    def bind(self, rec: RunRecord) -> None:
        self.rec = rec
        self.volumes: dict[str, Path] = {}
        self.per_pod: set[str] = set()
        for i, raw in enumerate(
            items(self.spec.get("volumeClaimTemplates"), "spec.volumeClaimTemplates")
        ):
            c = fields(raw, f"spec.volumeClaimTemplates[{i}]", ("metadata", "spec"))
            name = text((c.get("metadata") or {}).get("name"), "metadata.name")
            self.volumes[name] = self.user_workspaces.get(name) or shared_folder(
                rec.path / "workspaces" / name
            )
        for i, raw in enumerate(items(self.spec.get("volumes"), "spec.volumes")):
            v = fields(
                raw,
                f"spec.volumes[{i}]",
                ("name", "secret", "emptyDir", "persistentVolumeClaim", "configMap"),
            )
            name = v["name"]
            if name in self.user_workspaces:
                self.volumes[name] = self.user_workspaces[name]
            elif "emptyDir" in v:  # a pod's own: each container template gets a fresh one
                self.per_pod.add(name)
                self.volumes[name] = rec.path / "pods"
            elif "persistentVolumeClaim" in v:
                claim = fields(
                    v["persistentVolumeClaim"], "persistentVolumeClaim", ("claimName", "readOnly")
                )
                self.volumes[name] = shared_folder(
                    home() / "claims" / text(claim.get("claimName"), "claimName")
                )
            else:
                kind = "secret" if "secret" in v else "configMap"
                src = fields(
                    v[kind],
                    f"volumes[{name}].{kind}",
                    ("secretName", "name", "optional", "items", "defaultMode"),
                )
                if not src.get("optional"):
                    raise RunError(
                        f"volume {name!r} is a {kind}",
                        f"bind it to a folder with --workspace {name}=DIR",
                    )
                self.volumes[name] = shared_folder(
                    rec.path / "workspaces" / name
                )  # missing optional: empty
        rec.workspaces = {k: str(v) for k, v in self.volumes.items()}

    def _states(self, rec: RunRecord) -> dict[str, str]:
        out = {}
        for name, t in rec.tasks.items():
            if t.state == SKIPPED and t.skip_kind == "depends":
                out[name] = "Omitted"
            else:
                out[name] = _STATE.get(t.state, "Failed")
        return out

    def _failed_leaves(self, rec: RunRecord, final: bool) -> list[str]:
        """Decided leaf tasks of a DAG whose *branch* failed (workflow/controller/dag.go
        ``assessDAGPhase``): a task that ran has its own phase; one skipped or omitted inherits
        its parents', Failed first. A DAG fails when such a leaf exists: a failure that a later
        ``depends: "x.Failed"`` task handled is not one."""
        nodes = [n for n in self.nodes if n.final == final]
        memo: dict[str, str | None] = {}

        def branch(node: Node) -> str | None:
            if node.name not in memo:
                state = rec.tasks[node.name].state
                if state in (SUCCEEDED, FAILED):
                    memo[node.name] = state
                elif state == CANCELLED:
                    memo[node.name] = FAILED
                elif state != SKIPPED:
                    memo[node.name] = None  # not decided yet
                else:
                    parents = [branch(self._by_name[d]) for d in node.deps]
                    memo[node.name] = FAILED if FAILED in parents else SUCCEEDED
            return memo[node.name]

        needed = {d for n in nodes for d in n.deps}
        return [n.name for n in nodes if n.name not in needed and branch(n) == FAILED]

    def workflow_status(self, rec: RunRecord) -> str:
        return "Failed" if self._failed_leaves(rec, final=False) else "Succeeded"

    def stopping(self, rec: RunRecord) -> str:
        """``failFast`` (the default): once the DAG has failed no new task is scheduled."""
        if not self._failed_leaves(rec, final=False):
            return ""
        failed = [t.name for t in rec.tasks.values() if t.state == FAILED and not t.finally_]
        return f"task {failed[0]!r} failed" if failed else "the DAG failed"

    def outcome(self, rec: RunRecord) -> tuple[bool, str]:
        bad = self._failed_leaves(rec, final=False) + self._failed_leaves(rec, final=True)
        if not bad:
            return False, "Succeeded"
        failed = [t.name for t in rec.tasks.values() if t.state == FAILED] or bad
        return True, "Failed: task " + ", ".join(failed) + " failed"

    def retries_on(self, node: Node, kind: str) -> bool:
        """retryPolicy (docs/retries.md): OnFailure (the default) retries a failed main
        container, OnError an error (here: outputs that cannot be read), Always both."""
        policy = node.extra.get("retry_policy", "OnFailure")
        return policy == "Always" or (policy == "OnFailure") == (kind == "failed")

    def _dag_vars(self, node: Node, rec: RunRecord) -> Callable[[str], str | None]:
        def resolve(body: str) -> str | None:
            m = re.match(r"^workflow\.parameters\.([\w.-]+)$", body)
            if m:
                return self.params.get(m.group(1))
            if body == "workflow.name":
                return rec.id
            if body == "workflow.status" and node.final:
                return self.workflow_status(rec)
            m = re.match(r"^workflow\.outputs\.parameters\.([\w.-]+)$", body)
            if m:
                return self.globals.get(m.group(1))
            m = re.match(r"^tasks\.([\w-]+)\.outputs\.parameters\.([\w.-]+)$", body)
            if m:
                t = rec.tasks.get(m.group(1))
                if t is not None and t.state == SUCCEEDED:
                    return t.results.get(m.group(2))
                # Not run: the producer's declared valueFrom.default, if any (controller/scope.go)
                producer = self._by_name.get(m.group(1))
                if t is None or producer is None:
                    return None
                for name, _, default, _ in output_params(producer.extra["template"]):
                    if name == m.group(2) and default is not None:
                        return text(default, name)
                return None
            m = re.match(r"^tasks\.([\w-]+)\.status$", body)
            if m and m.group(1) in rec.tasks:
                return self._states(rec)[m.group(1)]
            return None

        return resolve

    def decide(self, node: Node, rec: RunRecord, attempt: int) -> Skip | Fail | Start | Done:
        where = f"dag task {node.name!r}"
        if "trials" in node.extra:
            return _join(node, rec)
        if node.extra["depends"].strip():
            states = {k: v for k, v in self._states(rec).items() if k in node.deps}
            if not evaluate_depends(node.extra["depends"], states, where):
                return Skip(f"Omitted: depends {node.extra['depends']!r} is false", "depends")
        resolve = self._dag_vars(node, rec)
        try:
            when = substitute(text(node.extra["when"], f"{where}.when"), resolve, f"{where}.when")
            if when.strip() and not evaluate_when(when, f"{where}.when"):
                return Skip(f"when {when} is false")
            args = {}
            for k, v in node.extra["args"].items():
                try:
                    args[k] = substitute(v, resolve, f"{where}.arguments.{k}")
                except Unresolved:
                    if not _TAG.fullmatch(v.strip()):
                        raise
                    # A whole-value reference that resolves to nothing leaves the argument
                    # unsupplied: the input's own default applies (dag.go, common/util.go).
                    node.extra.setdefault("unsupplied", {})[k] = v
        except RunError as e:
            return Fail(str(e))
        return Start([self._container(node, args, attempt)])

    def _container(self, node: Node, args: dict[str, str], attempt: int) -> Container:
        tmpl = node.extra["template"]
        where = f"template {tmpl['name']!r}"
        inputs = fields(tmpl.get("inputs"), f"{where}.inputs", ("parameters",))
        values: dict[str, str] = {}
        for i, raw in enumerate(items(inputs.get("parameters"), f"{where}.inputs.parameters")):
            p = fields(
                raw,
                f"{where}.inputs.parameters[{i}]",
                ("name", "default", "value", "enum"),
                ("description",),
            )
            name = p["name"]
            if name in args:  # an argument overrides even a fixed value (common/util.go)
                values[name] = args[name]
            elif "value" in p:
                values[name] = text(p["value"], name)
            elif "default" in p:
                values[name] = text(p["default"], name)
            else:
                ref = node.extra.get("unsupplied", {}).get(name)
                why = f" ({ref} cannot be resolved)" if ref else ""
                raise RunError(f"{where}: inputs.parameters.{name} was not supplied{why}")
            enum = [text(v, name) for v in items(p.get("enum"), "enum")]
            if enum and values[name] not in enum:
                raise RunError(
                    f"{where}: inputs.parameters.{name} {values[name]!r} "
                    f"is not one of {', '.join(enum)}"
                )
        for key in args:
            if key not in values:
                raise RunError(
                    f"dag task {node.name!r}: argument {key!r} is not an input of {where}"
                )

        def resolve(body: str) -> str | None:
            m = re.match(r"^inputs\.parameters\.([\w.-]+)$", body)
            if m:
                return values.get(m.group(1))
            m = re.match(r"^workflow\.parameters\.([\w.-]+)$", body)
            if m:
                return self.params.get(m.group(1))
            if body == "workflow.name":
                return self.rec.id
            if body == "retries":
                return str(attempt - 1)
            return None

        c = fields(
            tmpl.get("container"),
            f"{where}.container",
            CONTAINER_FIELDS,
            ("resources", "imagePullPolicy"),
        )
        sub = lambda v, f=where: substitute(text(v, f), resolve, f)  # noqa: E731
        env = {}
        for j, e in enumerate(items(c.get("env"), f"{where}.container.env")):
            e = fields(e, f"{where}.container.env[{j}]", ("name", "value"))
            env[e["name"]] = sub(e.get("value", ""))
        mounts = []
        for j, m in enumerate(items(c.get("volumeMounts"), f"{where}.container.volumeMounts")):
            m = fields(
                m,
                f"{where}.container.volumeMounts[{j}]",
                ("name", "mountPath", "readOnly", "subPath"),
            )
            if m["name"] not in self.volumes:
                raise RunError(f"{where}: volumeMount {m['name']!r} names no volume")
            host = self.volumes[m["name"]]
            if m["name"] in self.per_pod:
                pod = node.extra.get("pod", node.name)
                host = shared_folder(self.rec.path / "pods" / f"{pod}-{attempt}" / m["name"])
            if m.get("subPath"):
                host = shared_folder(host / m["subPath"])
            mounts.append(Mount(host, m["mountPath"], bool(m.get("readOnly"))))
        outputs = {}
        node.extra["outputs"] = []
        for name, path, default, global_name in output_params(tmpl):
            outputs[name] = sub(path)
            node.extra["outputs"].append((name, default, global_name))
        sec = {
            **self.pod_security,
            **fields(
                tmpl.get("securityContext"),
                f"{where}.securityContext",
                ("runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup"),
            ),
            **fields(
                c.get("securityContext"),
                f"{where}.container.securityContext",
                SECURITY_FIELDS,
            ),
        }
        return Container(
            name=node.extra.get("pod", node.name),
            image=sub(c.get("image", "")),
            command=[sub(x) for x in items(c.get("command"), f"{where}.container.command")],
            args=[sub(x) for x in items(c.get("args"), f"{where}.container.args")],
            env=env,
            working_dir=sub(c.get("workingDir", "")),
            **security(sec, f"{where}.container.securityContext"),
            mounts=mounts,
            gpus=gpu_limit(c.get("resources")),
            outputs=outputs,
        )

    def outputs(self, node: Node, files: dict[str, str | None]) -> dict[str, str]:
        out = {}
        for name, default, global_name in node.extra.get("outputs", []):
            value = files.get(f"{node.extra.get('pod', node.name)}/{name}")
            if value is None:
                if default is None:
                    raise OutputError(f"output parameter {name!r}: no file and no default")
                value = text(default, name)
            else:
                value = value.removesuffix("\n")  # as the executor does (executor.go)
            out[name] = value
            if global_name:
                self.globals[global_name] = value
        return out

    def deadlines(self) -> tuple[float | None, float | None, float | None]:
        deadline = self.spec.get("activeDeadlineSeconds")
        return (float(deadline) if deadline else None), None, None

    def finish(self, rec: RunRecord) -> None:
        rec.results = dict(self.globals)


_ITEM = re.compile(r"\{\{\s*item(?:\.([\w-]+))?\s*\}\}")


def _fan_out(raw: Any, where: str, node: Node) -> list[Node]:
    """``withItems``: a node per item (``{{item}}``/``{{item.KEY}}`` in its arguments), then
    the join node named like the task, after all of them."""
    if raw is None:
        return [node]
    values = items(raw, f"{where}.withItems")
    if not values:
        raise Unsupported(f"{where}.withItems: an empty list is not supported by taskyard run")
    trials = []
    for i, item in enumerate(values):

        def fill(m: re.Match[str], item: Any = item, i: int = i) -> str:
            if m.group(1) is None:
                return item if isinstance(item, str) else json.dumps(item)
            if not isinstance(item, dict) or m.group(1) not in item:
                raise RunError(f"{where}.withItems[{i}] has no key {m.group(1)!r}")
            return str(item[m.group(1)])

        extra = copy.copy(node.extra)
        extra["args"] = {k: _ITEM.sub(fill, v) for k, v in node.extra["args"].items()}
        extra["pod"] = f"{node.name}.{i}"
        trials.append(
            Node(
                name=f"{node.name}[{i}]",
                ref=node.ref,
                deps=node.deps,
                final=node.final,
                retries=node.retries,
                timeout=node.timeout,
                extra=extra,
            )
        )
    join = Node(
        name=node.name,
        ref=node.ref,
        deps=frozenset(t.name for t in trials),
        final=node.final,
        extra={
            **node.extra,
            "depends": "",
            "when": "",
            "args": {},
            "trials": [t.name for t in trials],
        },
        join=True,
    )
    return [*trials, join]


def _join(node: Node, rec: RunRecord) -> Skip | Fail | Done:
    trials = [rec.tasks[t] for t in node.extra["trials"]]
    bad = [t for t in trials if t.state == FAILED]
    if bad:
        return Fail(f"item {bad[0].name} failed: {bad[0].reason}")
    ran = [t for t in trials if t.state == SUCCEEDED]  # only Succeeded children aggregate
    if not ran:
        return Skip("no item ran", "parent")
    names = sorted({n for t in ran for n in t.results})
    out = {n: _aggregate([t.results[n] for t in ran if n in t.results]) for n in names}
    return Done(out, f"{len(ran)} of {len(trials)} items")


def _aggregate(values: list[str]) -> str:
    """operator.go ``aggregatedJSONValueList``: a JSON list of the values (Go's compact JSON),
    of the parsed values when every one is a JSON map or list."""
    parsed = []
    for v in values:
        try:
            x = json.loads(v)
        except ValueError:
            break
        if not isinstance(x, dict | list):
            break
        parsed.append(x)
    else:
        return json.dumps(parsed, separators=(",", ":"))
    return json.dumps(values, separators=(",", ":"))
