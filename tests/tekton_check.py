"""A semantic check of rendered Tekton documents: what a cluster would only say at run time.

Every ``$(params.x)``, ``$(results.r.path)``, ``$(workspaces.w.path)``, ``$(tasks.t.results.r)``
resolves against the documents themselves (not the spec), bindings match declarations, status
references stay in ``finally``, and no param is interpolated into a ``script``.
"""

from __future__ import annotations

import re
from typing import Any

from taskyard.spec import refs

_REF = re.compile(r"\$\(([^()]*)\)")


def _strings(node: Any, where: str):
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{where}[{i}]")


def _refs(node: Any, where: str):
    for at, text in _strings(node, where):
        for m in _REF.finditer(text):
            try:
                yield at, refs.parse(m.group(1))
            except ValueError as e:
                yield at, e


def _names(items: list[dict[str, Any]] | None) -> set[str]:
    return {x["name"] for x in items or []}


def _task_problems(doc: dict[str, Any]) -> list[str]:
    name, spec = doc["metadata"]["name"], doc["spec"]
    known = {
        "param": _names(spec.get("params")),
        "result-path": _names(spec.get("results")),
        "workspace-path": _names(spec.get("workspaces")),
        "workspace-bound": _names(spec.get("workspaces")),
    }
    out = []
    for i, step in enumerate(spec["steps"]):
        if "$(params." in step.get("script", ""):
            out.append(f"task {name}: steps[{i}].script interpolates a param")
        for at, ref in _refs(step, f"task {name}: steps[{i}]"):
            if isinstance(ref, ValueError):
                out.append(f"{at}: {ref}")
            elif ref.kind not in known:
                out.append(f"{at}: {ref.text} is not allowed in a Task")
            elif ref.name not in known[ref.kind]:
                out.append(f"{at}: {ref.text} does not resolve")
    return out


def _binding_problems(
    where: str, params: dict[str, str], spaces: set[str], task: dict[str, Any]
) -> list[str]:
    """Params and workspaces a run or pipeline task gives ``task``, against its declaration."""
    declared = task["spec"].get("params", [])
    out = [f"{where}: param {p} is not declared" for p in params if p not in _names(declared)]
    out += [
        f"{where}: required param {p['name']} is not bound"
        for p in declared
        if "default" not in p and p["name"] not in params
    ]
    ws = task["spec"].get("workspaces", [])
    out += [f"{where}: workspace {w} is not declared" for w in spaces if w not in _names(ws)]
    out += [
        f"{where}: required workspace {w['name']} is not bound"
        for w in ws
        if not w.get("optional") and w["name"] not in spaces
    ]
    return out


def _pipeline_problems(doc: dict[str, Any], tasks: dict[str, dict[str, Any]]) -> list[str]:
    name, spec = doc["metadata"]["name"], doc["spec"]
    params, spaces = _names(spec.get("params")), _names(spec.get("workspaces"))
    regular = {t["name"]: t for t in spec["tasks"]}
    out = []

    def check(at: str, node: Any, final: bool) -> None:
        for where, ref in _refs(node, at):
            if isinstance(ref, ValueError):
                out.append(f"{where}: {ref}")
            elif ref.kind == "param" and ref.name not in params:
                out.append(f"{where}: {ref.text} does not resolve")
            elif ref.kind == "task-result":
                target = regular.get(ref.task)
                producer = tasks.get(target["taskRef"]["name"]) if target else None
                results = _names(producer["spec"].get("results")) if producer else set()
                if ref.name not in results:
                    out.append(f"{where}: {ref.text} does not resolve")
            elif ref.kind in ("task-status", "tasks-status"):
                if not final:
                    out.append(f"{where}: {ref.text} outside finally")
                elif ref.kind == "task-status" and ref.task not in regular:
                    out.append(f"{where}: {ref.text} does not resolve")
            elif ref.kind not in ("param", "run-name"):
                out.append(f"{where}: {ref.text} is not allowed in a Pipeline")

    for final, items in ((False, spec["tasks"]), (True, spec.get("finally", []))):
        for pt in items:
            at = f"pipeline {name}: task {pt['name']}"
            task = tasks.get(pt["taskRef"]["name"])
            if task is None:
                out.append(f"{at}: no Task {pt['taskRef']['name']}")
                continue
            bound = {p["name"]: p["value"] for p in pt.get("params", [])}
            ws = {w["name"]: w["workspace"] for w in pt.get("workspaces", [])}
            out += _binding_problems(at, bound, set(ws), task)
            out += [f"{at}: binds unknown workspace {w}" for w in ws.values() if w not in spaces]
            after = pt.get("runAfter", [])
            out += [f"{at}: runAfter {d} is unknown" for d in after if d not in regular]
            check(f"{at}.params", pt.get("params", []), final)
            check(f"{at}.when", pt.get("when", []), final)
    check(f"pipeline {name}: results", spec.get("results", []), False)
    return out


def _run_problems(doc: dict[str, Any], targets: dict[str, dict[str, Any]]) -> list[str]:
    spec = doc["spec"]
    ref = spec.get("taskRef") or spec.get("pipelineRef")
    where = f"{doc['kind']} {doc['metadata']['generateName']}"
    target = targets.get(ref["name"])
    if target is None:
        return [f"{where}: no {ref['name']}"]
    bound = {p["name"]: p["value"] for p in spec.get("params", [])}
    out = _binding_problems(where, bound, _names(spec.get("workspaces")), target)
    pipeline_tasks = _names(target["spec"].get("tasks")) | _names(target["spec"].get("finally"))
    out += [
        f"{where}: taskRunSpecs names unknown task {s['pipelineTaskName']}"
        for s in spec.get("taskRunSpecs", [])
        if s["pipelineTaskName"] not in pipeline_tasks
    ]
    return out


def semantic_problems(documents: list[dict[str, Any]]) -> list[str]:
    """What tekton would only tell us at run time: references and bindings that do not resolve."""
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in documents:
        key = d["metadata"].get("name") or d["metadata"]["generateName"]
        by_kind.setdefault(d["kind"], {})[key] = d
    tasks, pipelines = by_kind.get("Task", {}), by_kind.get("Pipeline", {})
    out = [x for t in tasks.values() for x in _task_problems(t)]
    out += [x for p in pipelines.values() for x in _pipeline_problems(p, tasks)]
    out += [x for r in by_kind.get("TaskRun", {}).values() for x in _run_problems(r, tasks)]
    out += [x for r in by_kind.get("PipelineRun", {}).values() for x in _run_problems(r, pipelines)]
    return out
