"""Reference resolution for one task of a local run, through the one parser (spec.refs).

Two levels, as in Tekton. Pipeline level: a pipeline task's param bindings and ``when`` inputs
see pipeline params, upstream results, the run name and (in ``finally``) task statuses. Task
level: the task's image/command/args/env see its resolved params, its result paths and its
workspace paths, in the form the executor's :class:`Layout` gives. Substitution is one pass,
so a value that itself contains ``$(...)`` is never re-expanded (no injection through params).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from taskyard.errors import RunError
from taskyard.run.executor import Invocation, Layout
from taskyard.run.store import CANCELLED, FAILED, SKIPPED, SUCCEEDED, TaskRecord
from taskyard.spec import PipelineSpec, PipelineTask, refs


class MissingResult(RunError):
    """A reference to a result that the producing task did not (or could not) write."""

    def __init__(self, ref: refs.Ref, why: str) -> None:
        super().__init__(f"{ref.text} is missing: {why}")
        self.ref = ref


@dataclass
class Context:
    """What pipeline-level references resolve against at one moment of a run."""

    spec: PipelineSpec
    run_id: str
    params: dict[str, str]
    records: dict[str, TaskRecord]

    def value(self, ref: refs.Ref) -> str:
        if ref.kind == "param":
            try:
                return self.params[ref.name]
            except KeyError:
                raise RunError(f"{ref.text}: no such pipeline param") from None
        if ref.kind == "run-name":
            return self.run_id
        if ref.kind == "task-result":
            rec = self.records.get(ref.task)
            if rec is None:
                raise RunError(f"{ref.text}: no such task")
            if rec.state != SUCCEEDED:
                raise MissingResult(ref, f"task {ref.task!r} is {rec.state}")
            if ref.name not in rec.results:
                raise MissingResult(ref, f"task {ref.task!r} did not write it")
            return rec.results[ref.name]
        if ref.kind == "task-status":
            return task_status(self.records[ref.task])
        if ref.kind == "tasks-status":
            return tasks_status([self.records[t.name] for t in self.spec.tasks])
        raise RunError(f"{ref.text} cannot be used in a pipeline")

    def substitute(self, text: str) -> str:
        return refs.substitute(text, self.value)


def task_status(rec: TaskRecord) -> str:
    """``$(tasks.T.status)``: Succeeded, Failed, or None (skipped / not run)."""
    return rec.state if rec.state in (SUCCEEDED, FAILED) else "None"


def tasks_status(records: list[TaskRecord]) -> str:
    """``$(tasks.status)``: Succeeded, Failed, Completed (some skipped, none failed) or None."""
    states = {r.state for r in records}
    if FAILED in states:
        return "Failed"
    if CANCELLED in states or not states <= {SUCCEEDED, SKIPPED}:
        return "None"
    return "Succeeded" if states <= {SUCCEEDED} else "Completed"


def consumed_tasks(pt: PipelineTask) -> set[str]:
    """Tasks whose results the pipeline task reads (bindings and ``when`` inputs)."""
    return {r.task for r in pt.refs() if r.kind == "task-result"}


def bind_params(
    pt: PipelineTask, ctx: Context, combination: dict[str, str] | None = None
) -> dict[str, str]:
    """Task defaults overridden by the pipeline task's bindings (bindings resolved).

    ``combination``: one of a matrixed task's combinations (literal values, checked with the
    spec), on top. An array (``$(tasks.T.results.R[*])``) arrives as its JSON list string.
    """
    out = {p.name: p.default for p in pt.task.params if p.default is not None}
    out.update(combination or {})
    for key, text in pt.params.items():
        out[key] = ctx.substitute(text)
        # A value from an upstream result is only known now; a cluster would pass it unchecked.
        if why := pt.task.param(key).problem(out[key]):
            raise RunError(f"param {key!r} of task {pt.name!r}: {why}")
    return out


def when_skip_reason(pt: PipelineTask, ctx: Context) -> str | None:
    """None when every ``when`` expression holds, else the reason the task is skipped."""
    for w in pt.when:
        value = ctx.substitute(w.input)
        values = [ctx.substitute(v) for v in w.values]
        holds = (value in values) == (w.operator == "in")
        if not holds:
            return f"when {w.input} ({value!r}) {w.operator} {values} is false"
    return None


def invocation(
    pt: PipelineTask,
    params: dict[str, str],
    workspaces: dict[str, Path | None],
    results_dir: Path,
    cwd: Path,
    layout_of: Callable[[dict[str, Path | None], Path], Layout],
    name: str = "",
) -> Invocation:
    """Resolve the task's image/command/args/env for an executor.

    ``workspaces`` maps pipeline workspace -> host folder (None: an unbound optional one).
    ``name``: what the executor calls it (one trial of a matrixed task), default the task's.
    """
    spec = pt.task
    host = {w.name: None for w in spec.workspaces}
    for task_ws, pipe_ws in pt.workspaces.items():
        host[task_ws] = workspaces.get(pipe_ws)
    layout = layout_of(host, results_dir)

    def value(ref: refs.Ref) -> str:
        if ref.kind == "param":
            return params[ref.name]
        if ref.kind == "result-path":
            return f"{layout.results_dir}/{ref.name}"
        if ref.kind == "workspace-path":
            return layout.workspaces.get(ref.name, "")
        if ref.kind == "workspace-bound":
            return "true" if host.get(ref.name) is not None else "false"
        raise RunError(f"task {spec.name!r}: {ref.text} cannot be used inside a task")

    def sub(text: str) -> str:
        return refs.substitute(text, value)

    return Invocation(
        task=name or pt.name,
        spec=spec,
        image=sub(spec.image),
        command=tuple(sub(c) for c in spec.command),
        args=tuple(sub(a) for a in spec.args),
        env={k: sub(v) for k, v in spec.env.items()},
        workspaces=host,
        results_dir=results_dir,
        cwd=cwd,
        params=params,
    )
