"""The one reference syntax of a definition, and the only parser of it.

Definitions use Tekton's ``$(...)`` spelling as the neutral syntax (a forker who knows Tekton
reads it at sight). Every engine translates each reference through :func:`substitute`:

inside a task (command, args, env, image):
    ``$(params.NAME)``  ``$(results.NAME.path)``  ``$(workspaces.NAME.path)``
    ``$(workspaces.NAME.bound)``
inside a pipeline (task param bindings, ``when`` inputs, pipeline results):
    ``$(params.NAME)``  ``$(tasks.TASK.results.NAME)``  ``$(context.pipelineRun.name)``
    and, in ``finally`` tasks only, ``$(tasks.status)`` and ``$(tasks.TASK.status)``.

Arrays (fan-out, :attr:`taskyard.spec.pipeline.PipelineTask.matrix`): ``$(tasks.T.results.R[*])``
is every result ``R`` of a matrixed task ``T``, in combination order; ``$(params.NAME[*])``
inside a task expands such a param into separate args. Both are Tekton's own spelling
(tektoncd/pipeline docs/matrix.md "Results from fanned out Matrixed PipelineTasks": string
results of the fanned-out TaskRuns are aggregated into an array, consumed whole with ``[*]`` by
an array param; docs/tasks.md, array params expand with ``$(params.NAME[*])`` as a whole arg).
Argo and the local runner pass the same array as one JSON list string (argo-workflows
docs/variables.md: ``tasks.T.outputs.parameters.R`` of a withItems task "contains a JSON array
of the output parameter values of each invocation"), so a step reading such an arg accepts
both forms. They stay kinds ``param`` / ``task-result`` with ``array=True``, so every check of
names and dependencies applies to them unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

_REF = re.compile(r"\$\(([^()$]*)\)")
_N = r"[a-zA-Z0-9_-]+"
_FORMS: list[tuple[str, re.Pattern[str]]] = [
    ("param", re.compile(rf"^params\.({_N})(\[\*\])?$")),
    ("result-path", re.compile(rf"^results\.({_N})\.path$")),
    ("workspace-path", re.compile(rf"^workspaces\.({_N})\.path$")),
    ("workspace-bound", re.compile(rf"^workspaces\.({_N})\.bound$")),
    ("task-result", re.compile(rf"^tasks\.({_N})\.results\.({_N})(\[\*\])?$")),
    ("task-status", re.compile(rf"^tasks\.({_N})\.status$")),
    ("tasks-status", re.compile(r"^tasks\.status$")),
    ("run-name", re.compile(r"^context\.pipelineRun\.name$")),
]

RefKind = Literal[
    "param",
    "result-path",
    "workspace-path",
    "workspace-bound",
    "task-result",
    "task-status",
    "tasks-status",
    "run-name",
]


@dataclass(frozen=True)
class Ref:
    """One parsed ``$(...)`` reference; ``name`` is the param/result/workspace name."""

    kind: RefKind
    name: str = ""
    task: str = ""
    # ``[*]``: the whole array (a matrixed task's results; an array param inside a task).
    array: bool = False

    @property
    def text(self) -> str:
        star = "[*]" if self.array else ""
        return {
            "param": f"$(params.{self.name}{star})",
            "result-path": f"$(results.{self.name}.path)",
            "workspace-path": f"$(workspaces.{self.name}.path)",
            "workspace-bound": f"$(workspaces.{self.name}.bound)",
            "task-result": f"$(tasks.{self.task}.results.{self.name}{star})",
            "task-status": f"$(tasks.{self.task}.status)",
            "tasks-status": "$(tasks.status)",
            "run-name": "$(context.pipelineRun.name)",
        }[self.kind]


def parse(body: str) -> Ref:
    """Parse the inside of ``$(...)``; raise ValueError for anything we do not know."""
    body = body.strip()
    for kind, pattern in _FORMS:
        m = pattern.match(body)
        if not m:
            continue
        groups = m.groups()
        if kind == "task-result":
            return Ref(kind, name=groups[1], task=groups[0], array=bool(groups[2]))  # type: ignore[arg-type]
        if kind == "task-status":
            return Ref(kind, task=groups[0])  # type: ignore[arg-type]
        if kind == "param":
            return Ref(kind, name=groups[0], array=bool(groups[1]))  # type: ignore[arg-type]
        return Ref(kind, name=groups[0] if groups else "")  # type: ignore[arg-type]
    raise ValueError(f"unknown reference $({body})")


def find(text: str) -> Iterator[Ref]:
    """Every reference in ``text``, in order."""
    for m in _REF.finditer(text):
        yield parse(m.group(1))


def substitute(text: str, value_of: Callable[[Ref], str]) -> str:
    """Replace each reference by ``value_of(ref)``; the one translation hook every engine uses."""
    return _REF.sub(lambda m: value_of(parse(m.group(1))), text)


# Helpers for definitions: ``param("url")`` reads better than a hand-typed "$(params.url)".
def param(name: str) -> str:
    return Ref("param", name=name).text


def result(task: str, name: str) -> str:
    return Ref("task-result", name=name, task=task).text


def results(task: str, name: str) -> str:
    """``$(tasks.T.results.R[*])``: every ``R`` of the matrixed task ``T``, as an array."""
    return Ref("task-result", name=name, task=task, array=True).text


def array_param(name: str) -> str:
    """``$(params.NAME[*])``: an array param expanded into separate args (a whole arg only)."""
    return Ref("param", name=name, array=True).text


def result_path(name: str) -> str:
    return Ref("result-path", name=name).text


def workspace_path(name: str) -> str:
    return Ref("workspace-path", name=name).text


def task_status(task: str) -> str:
    return Ref("task-status", task=task).text


TASKS_STATUS = Ref("tasks-status").text
RUN_NAME = Ref("run-name").text
