"""Parity: each engine's rendered pipeline has the spec's graph -- tasks, order, gates, params,
images, commands, retries and timeouts -- and the spec's fan-out: the same matrixed tasks with
the same combinations, in the same order (Tekton ``matrix``, Argo ``withItems``).

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


def _argo_back(
    text: str,
    paths: dict[str, str],
    globals_: dict[str, str],
    fanned: frozenset[str] = frozenset(),
) -> str:
    """Argo's tags (and the fixed result/workspace paths) back to the spec's ``$(...)``.

    An output of a withItems task (``fanned``) is the aggregated JSON list: ``[*]`` in the spec.
    """
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
            if hit and form.endswith(".results.{1})") and hit.group(1) in fanned:
                return form.format(*hit.groups())[:-1] + "[*])"
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
            fanned = frozenset(x["name"] for x in dag["dag"]["tasks"] if "withItems" in x)
            pipeline_back = functools.partial(
                _argo_back, paths={}, globals_=globals_, fanned=fanned
            )
            items = {f"{{{{item.{k}}}}}" for k in (dt.get("withItems") or [{}])[0]}
            # an input fed a withItems task's aggregated output is the spec's array param
            arrays = {
                p["name"]
                for p in dt.get("arguments", {}).get("parameters", [])
                if p["value"] not in items and pipeline_back(p["value"]).endswith("[*])")
            }

            def task_back(x: str, paths: dict[str, str] = paths, arrays: set[str] = arrays) -> str:
                out = _argo_back(x, paths, globals_)
                return next((f"$(params.{n}[*])" for n in arrays if out == f"$(params.{n})"), out)

            tasks[dt["name"]] = {
                "task": t["metadata"]["labels"]["taskyard.dev/task"],
                "finally": final,
                "deps": sorted(dt["depends"].split(" && ")) if dt.get("depends") else [],
                "when": _argo_when(dt.get("when"), pipeline_back),
                "params": dict(
                    sorted(
                        (p["name"], pipeline_back(p["value"]))
                        for p in dt.get("arguments", {}).get("parameters", [])
                        if p["value"] not in items  # the matrix: see argo_fan_out
                    )
                ),
                "image": inputs["image"]["default"],
                "command": [task_back(x) for x in c["command"]],
                "args": [task_back(x) for x in c.get("args", [])],
                "retries": int(t.get("retryStrategy", {}).get("limit", 0)),
                "timeout": None if deadline is None else int(deadline),
            }
    return {
        "name": workflow_template_doc["metadata"]["name"],
        "params": sorted(p["name"] for p in spec.get("arguments", {}).get("parameters", [])),
        "tasks": tasks,
    }


def argo_fan_out(workflow_template_doc: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """The withItems tasks: each item, a map of the params it sets (``{{item.K}}`` arguments)."""
    spec = workflow_template_doc["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    out = {}
    for dt in templates[spec["entrypoint"]]["dag"]["tasks"]:
        if "withItems" not in dt:
            continue
        args = {p["name"]: p["value"] for p in dt["arguments"]["parameters"]}
        keys = {name: value[len("{{item.") : -2] for name, value in args.items()
                if value.startswith("{{item.")}  # fmt: skip
        out[dt["name"]] = [{n: str(item[k]) for n, k in keys.items()} for item in dt["withItems"]]
    return out


def tekton_fan_out(pipeline_doc: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """The matrix tasks: their combinations as Tekton generates them, the first param slowest
    (docs/matrix.md "Generating Combinations")."""
    out = {}
    for pt in pipeline_doc["spec"]["tasks"]:
        if "matrix" not in pt:
            continue
        combos: list[dict[str, str]] = [{}]
        for p in pt["matrix"]["params"]:
            combos = [{**c, p["name"]: v} for c in combos for v in p["value"]]
        out[pt["name"]] = combos
    return out


def _argo(name: str) -> dict[str, Any]:
    """Read the committed WorkflowTemplate (what a user applies) and build the graph."""
    return argo_graph(yaml.safe_load((ROOT / f"hera/{name}.yaml").read_text()))


# ---- the one test ---------------------------------------------------------------------------
ENGINES: dict[str, Callable[[str], dict[str, Any]]] = {
    "tekton": _tekton,
    "argo": _argo,
}


FAN_OUT: dict[str, Callable[[str], dict[str, list[dict[str, str]]]]] = {
    "tekton": lambda name: tekton_fan_out(
        yaml.safe_load(
            (ROOT / f"pipelines/{name}/{PIPELINES[name].version}/{name}.yaml").read_text()
        )
    ),
    "argo": lambda name: argo_fan_out(yaml.safe_load((ROOT / f"hera/{name}.yaml").read_text())),
}


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_engine_graph_equals_spec_graph(engine: str, pipeline: str) -> None:
    assert ENGINES[engine](pipeline) == spec_graph(PIPELINES[pipeline])


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
@pytest.mark.parametrize("engine", sorted(FAN_OUT))
def test_engine_fan_out_equals_spec_matrix(engine: str, pipeline: str) -> None:
    """Same matrixed tasks, same combinations in the same order (dependencies: the graph)."""
    spec = PIPELINES[pipeline]
    assert FAN_OUT[engine](pipeline) == {t.name: t.combinations() for t in spec.tasks if t.matrix}


def test_parity_sees_a_changed_fan_out() -> None:
    """Not vacuous: a matrix value changed or a withItems item dropped is a difference."""
    from taskyard.render import argo, tekton

    p = PIPELINES["sweep"]
    want = {t.name: t.combinations() for t in p.tasks if t.matrix}
    assert want and tekton_fan_out(tekton.pipeline(p)) == want
    assert argo_fan_out(argo.workflow_template(p).to_dict()) == want
    doc = tekton.pipeline(p)
    train = next(t for t in doc["spec"]["tasks"] if t["name"] == "train")
    train["matrix"]["params"][0]["value"].reverse()
    assert tekton_fan_out(doc) != want
    wf = argo.workflow_template(p).to_dict()
    wf["spec"]["templates"][0]["dag"]["tasks"][2]["withItems"].pop()
    assert argo_fan_out(wf) != want
    # the graph sees an array dependency: select-best reads train's results whole on both
    assert argo_graph(argo.workflow_template(p).to_dict()) == spec_graph(p)
    tasks = {t.task.name: tekton.task(t.task) for t in p.all_tasks}
    assert tekton_graph(tekton.pipeline(p), tasks) == spec_graph(p)


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
