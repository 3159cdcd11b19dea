"""Parity: each engine's rendered pipeline has the spec's graph -- tasks, order, gates, params,
images, commands, retries and timeouts.

Each engine contributes one function turning its committed documents back into the shape of
:func:`tests.graph.spec_graph` (its own reference syntax translated to the spec's ``$(...)``)
and one entry in ``ENGINES``; the test is the same for all.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskyard.catalog import PIPELINES
from taskyard.spec import refs
from tests.graph import spec_graph

ROOT = Path(__file__).resolve().parents[1]


# ---- Tekton -------------------------------------------------------------------------------
def _from_tekton(text: str) -> str:
    """Tekton's spelling back to the spec's; every reference must parse on the way."""
    return refs.substitute(text, lambda ref: ref.text)


_GO_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def _seconds(text: str | None) -> int | None:
    if text is None:
        return None
    m = _GO_DURATION.match(text)
    assert m and text, f"not a duration we write: {text!r}"
    h, mi, s = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


def _tekton_deps(pt: dict[str, Any]) -> list[str]:
    """``runAfter`` plus the tasks whose results it reads: the edges Tekton schedules by."""
    deps = set(pt.get("runAfter", []))
    texts = [p["value"] for p in pt.get("params", [])] + [w["input"] for w in pt.get("when", [])]
    for text in texts:
        deps |= {r.task for r in refs.find(text) if r.kind == "task-result"}
    return sorted(deps)


def tekton_graph(pipeline_doc: dict[str, Any], task_docs: dict[str, dict[str, Any]]) -> dict:
    """The rendered Pipeline (+ the Tasks it references) as the engine-neutral graph."""
    spec = pipeline_doc["spec"]
    tasks = {}
    for final, items in ((False, spec["tasks"]), (True, spec.get("finally", []))):
        for pt in items:
            task = task_docs[pt["taskRef"]["name"]]["spec"]
            (step,) = task["steps"]
            image = next(p for p in task["params"] if p["name"] == "image")
            assert step["image"] == "$(params.image)"
            tasks[pt["name"]] = {
                "task": pt["taskRef"]["name"],
                "finally": final,
                "deps": [] if final else _tekton_deps(pt),
                "when": sorted(
                    (_from_tekton(w["input"]), w["operator"], tuple(w["values"]))
                    for w in pt.get("when", [])
                ),
                "params": dict(
                    sorted((p["name"], _from_tekton(p["value"])) for p in pt.get("params", []))
                ),
                "image": image["default"],
                "command": [_from_tekton(c) for c in step["command"]],
                "args": [_from_tekton(a) for a in step.get("args", [])],
                "retries": pt.get("retries", 0),
                "timeout": _seconds(pt.get("timeout")),
            }
    return {
        "name": pipeline_doc["metadata"]["name"],
        "params": sorted(p["name"] for p in spec.get("params", [])),
        "tasks": tasks,
    }


def _tekton(name: str) -> dict[str, Any]:
    """Read the committed Tekton files (what a user applies) and build the graph."""
    version = PIPELINES[name].version
    pipeline = yaml.safe_load((ROOT / f"pipelines/{name}/{version}/{name}.yaml").read_text())
    tasks = {}
    for path in sorted(ROOT.glob("tasks/*/*/*.yaml")):
        doc = yaml.safe_load(path.read_text())
        tasks[doc["metadata"]["name"]] = doc
    return tekton_graph(pipeline, tasks)


# ---- Argo ---------------------------------------------------------------------------------
_ARGO_TAG = re.compile(r"\{\{([^{}]*)\}\}")
_ARGO_CMP = re.compile(r"^'([^']*)' (==|!=) '([^']*)'$")


def _argo_back(text: str, paths: dict[str, str], globals_: dict[str, str]) -> str:
    """Argo's tags (and the fixed result/workspace paths) back to the spec's ``$(...)``."""
    for path, ref in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(path, ref)

    def back(m: re.Match[str]) -> str:
        body = m.group(1)
        for pattern, form in (
            (r"^(?:workflow|inputs)\.parameters\.([\w-]+)$", "$(params.{0})"),
            (r"^tasks\.([\w-]+)\.outputs\.parameters\.([\w-]+)$", "$(tasks.{0}.results.{1})"),
            (r"^workflow\.outputs\.parameters\.([\w-]+)$", "{global}"),
            (r"^workflow\.name$", "$(context.pipelineRun.name)"),
            (r"^workflow\.status$", "$(tasks.status)"),
        ):
            hit = re.match(pattern, body)
            if hit:
                return globals_[hit.group(1)] if form == "{global}" else form.format(*hit.groups())
        raise AssertionError(f"a tag the Argo renderer should not write: {m.group(0)}")

    out = _ARGO_TAG.sub(back, text)
    list(refs.find(out))  # every reference must parse on the way back
    return out


def _argo_when(expr: str | None, back: Callable[[str], str]) -> list[tuple[str, str, tuple]]:
    """``'X' == 'a'`` / ``('X' == 'a' || 'X' == 'b') && ('Y' != 'c')`` -> when entries."""
    if not expr:
        return []
    clauses = expr[1:-1].split(") && (") if expr.startswith("(") else [expr]
    out = []
    for clause in clauses:
        parts = [_ARGO_CMP.match(c) for c in re.split(r" \|\| | && ", clause)]
        assert all(parts), f"not a when expression we write: {expr!r}"
        inputs = {m.group(1) for m in parts if m}
        ops = {m.group(2) for m in parts if m}
        assert len(inputs) == 1 and len(ops) == 1, expr
        operator = "in" if ops == {"=="} else "notin"
        out.append((back(inputs.pop()), operator, tuple(m.group(3) for m in parts if m)))
    return sorted(out)


def argo_graph(workflow_template_doc: dict[str, Any]) -> dict[str, Any]:
    """The rendered WorkflowTemplate as the engine-neutral graph."""
    spec = workflow_template_doc["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    globals_ = {
        o["globalName"]: f"$(tasks.{name}.results.{o['name']})"
        for name, t in templates.items()
        for o in t.get("outputs", {}).get("parameters", [])
        if "globalName" in o
    }
    dags = [(False, templates[spec["entrypoint"]])]
    if "onExit" in spec:
        dags.append((True, templates[spec["onExit"]]))
    tasks = {}
    for final, dag in dags:
        for dt in dag["dag"]["tasks"]:
            t = templates[dt["template"]]
            c = t["container"]
            inputs = {p["name"]: p for p in t.get("inputs", {}).get("parameters", [])}
            paths = {o["valueFrom"]["path"]: f"$(results.{o['name']}.path)"
                     for o in t.get("outputs", {}).get("parameters", [])}  # fmt: skip
            paths |= {
                m["mountPath"]: f"$(workspaces.{m['mountPath'].rsplit('/', 1)[1]}.path)"
                for m in c.get("volumeMounts", [])
            }
            assert c["image"] == "{{inputs.parameters.image}}"
            deadline = t.get("activeDeadlineSeconds")
            pipeline_back = functools.partial(_argo_back, paths={}, globals_=globals_)
            tasks[dt["name"]] = {
                "task": t["metadata"]["labels"]["taskyard.dev/task"],
                "finally": final,
                "deps": sorted(dt["depends"].split(" && ")) if dt.get("depends") else [],
                "when": _argo_when(dt.get("when"), pipeline_back),
                "params": dict(
                    sorted(
                        (p["name"], pipeline_back(p["value"]))
                        for p in dt.get("arguments", {}).get("parameters", [])
                    )
                ),
                "image": inputs["image"]["default"],
                "command": [_argo_back(x, paths, globals_) for x in c["command"]],
                "args": [_argo_back(x, paths, globals_) for x in c.get("args", [])],
                "retries": int(t.get("retryStrategy", {}).get("limit", 0)),
                "timeout": None if deadline is None else int(deadline),
            }
    return {
        "name": workflow_template_doc["metadata"]["name"],
        "params": sorted(p["name"] for p in spec.get("arguments", {}).get("parameters", [])),
        "tasks": tasks,
    }


def _argo(name: str) -> dict[str, Any]:
    """Read the committed WorkflowTemplate (what a user applies) and build the graph."""
    return argo_graph(yaml.safe_load((ROOT / f"hera/{name}.yaml").read_text()))


# ---- the one test ---------------------------------------------------------------------------
ENGINES: dict[str, Callable[[str], dict[str, Any]]] = {
    "tekton": _tekton,
    "argo": _argo,
}


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_engine_graph_equals_spec_graph(engine: str, pipeline: str) -> None:
    assert ENGINES[engine](pipeline) == spec_graph(PIPELINES[pipeline])


def test_parity_sees_a_changed_gate() -> None:
    """The comparison is not vacuous: a gate dropped from the rendered file is a difference."""
    name = "train-eval-deploy"
    doc = yaml.safe_load((ROOT / f"pipelines/{name}/0.1/{name}.yaml").read_text())
    tasks = {
        d["metadata"]["name"]: d
        for d in (yaml.safe_load(p.read_text()) for p in ROOT.glob("tasks/*/*/*.yaml"))
    }
    for t in doc["spec"]["tasks"]:
        t.pop("when", None)
    assert tekton_graph(doc, tasks) != spec_graph(PIPELINES[name])
