"""The one reference syntax of a definition, and the only parser of it.

Definitions use Tekton's ``$(...)`` spelling as the neutral syntax (a forker who knows Tekton
reads it at sight). Every engine translates each reference through :func:`substitute`:

inside a task (command, args, env, image):
    ``$(params.NAME)``  ``$(results.NAME.path)``  ``$(workspaces.NAME.path)``
    ``$(workspaces.NAME.bound)``
inside a pipeline (task param bindings, ``when`` inputs, pipeline results):
    ``$(params.NAME)``  ``$(tasks.TASK.results.NAME)``  ``$(context.pipelineRun.name)``
    and, in ``finally`` tasks only, ``$(tasks.status)`` and ``$(tasks.TASK.status)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

_REF = re.compile(r"\$\(([^()$]*)\)")
_N = r"[a-zA-Z0-9_-]+"
_FORMS: list[tuple[str, re.Pattern[str]]] = [
    ("param", re.compile(rf"^params\.({_N})$")),
    ("result-path", re.compile(rf"^results\.({_N})\.path$")),
    ("workspace-path", re.compile(rf"^workspaces\.({_N})\.path$")),
    ("workspace-bound", re.compile(rf"^workspaces\.({_N})\.bound$")),
    ("task-result", re.compile(rf"^tasks\.({_N})\.results\.({_N})$")),
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

    @property
    def text(self) -> str:
        return {
            "param": f"$(params.{self.name})",
            "result-path": f"$(results.{self.name}.path)",
            "workspace-path": f"$(workspaces.{self.name}.path)",
            "workspace-bound": f"$(workspaces.{self.name}.bound)",
            "task-result": f"$(tasks.{self.task}.results.{self.name})",
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
            return Ref(kind, name=groups[1], task=groups[0])  # type: ignore[arg-type]
        if kind == "task-status":
            return Ref(kind, task=groups[0])  # type: ignore[arg-type]
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


def result_path(name: str) -> str:
    return Ref("result-path", name=name).text


def workspace_path(name: str) -> str:
    return Ref("workspace-path", name=name).text


def task_status(task: str) -> str:
    return Ref("task-status", task=task).text


TASKS_STATUS = Ref("tasks-status").text
RUN_NAME = Ref("run-name").text
