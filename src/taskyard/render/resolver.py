"""Pipelines whose tasks come from this repository at a release tag, through Tekton's git resolver.

Installing a plain Pipeline means installing its Tasks too, and keeping both in step. A resolver
Pipeline carries no Task at all: at run time Tekton's git resolver fetches each task file from
the repository at the tag the Pipeline was released with (tektoncd/pipeline
``docs/git-resolver.md``: ``taskRef.resolver: git`` with params ``url``, ``revision`` and
``pathInRepo``; the resolver needs Pipelines >= 0.41, the built-in resolvers and
``enable-git-resolver``). Pure: built by rewriting what :func:`taskyard.render.tekton.pipeline`
returns, so both variants share every other field.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from taskyard import __version__
from taskyard.render import tekton
from taskyard.spec import PipelineSpec

FOLDER = "resolver"


@dataclass(frozen=True)
class Source:
    """Where the released catalog lives: the one place its repository URL and tag are named."""

    repo_url: str = "https://github.com/taskyard/taskyard.git"
    revision: str = f"v{__version__}"  # the release tag; a commit SHA pins harder (and caches)


CATALOG_SOURCE = Source()


def task_path(name: str, version: str) -> str:
    """A task's file in the repository (the tektoncd/catalog layout ``tekton_files`` writes)."""
    return f"tasks/{name}/{version}/{name}.yaml"


def path(p: PipelineSpec) -> str:
    return f"{FOLDER}/{p.name}/{p.version}/{p.name}.yaml"


def git_ref(name: str, version: str, source: Source = CATALOG_SOURCE) -> dict[str, Any]:
    """A ``taskRef`` through the git resolver, pinned to ``source.revision``."""
    return {
        "resolver": "git",
        "params": [
            {"name": "url", "value": source.repo_url},
            {"name": "revision", "value": source.revision},
            {"name": "pathInRepo", "value": task_path(name, version)},
        ],
    }


def pipeline(p: PipelineSpec, source: Source = CATALOG_SOURCE) -> dict[str, Any]:
    """The catalog Pipeline with every ``taskRef: {kind, name}`` turned into a git-resolver ref."""
    doc = copy.deepcopy(tekton.pipeline(p))
    versions = {t.task.name: t.task.version for t in p.all_tasks}
    for key in ("tasks", "finally"):
        for pt in doc["spec"].get(key, []):
            name = pt["taskRef"]["name"]
            pt["taskRef"] = git_ref(name, versions[name], source)
    return doc
