"""What a task is, independent of any engine."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from taskyard.errors import SpecError
from taskyard.spec import refs
from taskyard.spec._base import PARAM_RE, SpecModel, check_name

ParamType = Literal["string", "integer", "number", "boolean"]
_INTEGER = re.compile(r"^[+-]?\d+$")


class Param(SpecModel):
    """A parameter; ``default=None`` makes it required.

    Every engine passes params as strings (Tekton and Argo have no numbers), so ``type`` and
    ``enum`` say which strings are valid, as KFP's typed inputs do. The empty string always
    means "not set" (the step then uses its own default): a cluster cannot pass null either.
    The local runner checks values before anything runs; Argo gets ``enum`` (booleans too),
    Tekton only the description, since its ``enum`` needs an alpha feature flag.
    """

    name: str
    description: str = ""
    default: str | None = None
    type: ParamType = "string"
    enum: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "param", PARAM_RE)

    @model_validator(mode="after")
    def _default_fits(self) -> Param:
        if self.enum and self.type == "boolean":
            raise ValueError(f"param {self.name!r}: a boolean takes no enum")
        for value in self.enum:
            if value == "" or self.problem(value):
                raise ValueError(f"param {self.name!r}: enum value {value!r} is not a {self.type}")
        if self.default is not None and (why := self.problem(self.default)):
            raise ValueError(f"param {self.name!r}: default {why}")
        return self

    @property
    def required(self) -> bool:
        return self.default is None

    @property
    def choices(self) -> tuple[str, ...]:
        """The allowed values when they are a closed set (enum, or a boolean's two)."""
        return ("true", "false") if self.type == "boolean" else self.enum

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not valid for this param (None when it is)."""
        if value == "":
            return None
        if self.choices and value not in self.choices:
            return f"{value!r} is not one of {', '.join(self.choices)}"
        if self.type == "integer" and not _INTEGER.match(value):
            return f"{value!r} is not an integer"
        if self.type == "number":
            try:
                ok = math.isfinite(float(value))
            except ValueError:
                ok = False
            if not ok:
                return f"{value!r} is not a number"
        return None


class Result(SpecModel):
    """A small text value a step writes (kept far below Tekton's 4096-byte budget)."""

    name: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "result", PARAM_RE)


class Workspace(SpecModel):
    """A folder shared between tasks (Tekton workspace, Argo volume, local folder)."""

    name: str
    description: str = ""
    optional: bool = False
    read_only: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "workspace")


class Resources(SpecModel):
    """Requests for the task's pod; ``gpu`` counts ``nvidia.com/gpu``.

    A memory request always comes with a memory limit (``memory_limit``, default: the request):
    without one a step can take the node's memory, and the kubelet evicts other pods instead
    of OOM-killing the one that overran (https://kubernetes.io/docs/concepts/configuration/
    manage-resources-containers/#requests-and-limits).
    """

    cpu: str | None = None
    memory: str | None = None
    memory_limit: str | None = None
    gpu: int = Field(default=0, ge=0)
    # What the local runner does for a GPU task on a host without one.
    gpu_fallback: Literal["cpu", "error"] = "cpu"

    @model_validator(mode="after")
    def _limit_needs_request(self) -> Resources:
        if self.memory_limit and not self.memory:
            raise ValueError("resources: memory_limit needs a memory request")
        return self

    @property
    def memory_max(self) -> str | None:
        """The memory limit a render writes: the explicit one, else the request."""
        return self.memory_limit or self.memory


# The cache contract (steps/_cache.py): the switch, the age limit, and where a hit came from.
CACHE_PARAM, CACHE_AGE_PARAM, CACHE_RESULT = "cache", "cache-max-age", "cached-from"

TASK_REF_KINDS = {"param", "result-path", "workspace-path", "workspace-bound"}


class TaskSpec(SpecModel):
    """One containerized step: an image running one CLI with params as args or env."""

    name: str
    version: str = "0.1"
    display_name: str
    description: str
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    # What the task images are built for: `taskyard images build` runs a plain `docker build`
    # (taskyard/images.py, no --platform list) on linux/amd64 hosts and stages an x86_64 torch
    # wheel for `train`, so the images are single-arch; nothing else is claimed.
    platforms: tuple[str, ...] = ("linux/amd64",)
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    params: tuple[Param, ...] = ()
    results: tuple[Result, ...] = ()
    workspaces: tuple[Workspace, ...] = ()
    resources: Resources = Resources()
    # Whether the step needs the network (the docker executor runs the rest with none).
    network: bool = False
    # Whether the step replays a stored result for inputs it has seen (steps/_cache.py). The
    # step does the work, so a cached task keeps a contract: the `cache` and `cache-max-age`
    # params and the `cached-from` result (catalog/_common.py step_task adds them).
    cache: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "task")

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def param_names(self) -> set[str]:
        return {p.name for p in self.params}

    @property
    def result_names(self) -> set[str]:
        return {r.name for r in self.results}

    @property
    def workspace_names(self) -> set[str]:
        return {w.name for w in self.workspaces}

    def texts(self) -> list[tuple[str, str]]:
        """Every (field, text) that may hold a reference: image, command, args, env."""
        out = [("image", self.image)]
        out += [(f"command[{i}]", c) for i, c in enumerate(self.command)]
        out += [(f"args[{i}]", a) for i, a in enumerate(self.args)]
        out += [(f"env.{k}", v) for k, v in self.env.items()]
        return out

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        where = f"task {self.name!r}"
        for kind, names in (
            ("param", [p.name for p in self.params]),
            ("result", [r.name for r in self.results]),
            ("workspace", [w.name for w in self.workspaces]),
        ):
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise SpecError(f"{where}: duplicate {kind} name {sorted(dup)[0]!r}")
        if self.cache:
            lacking = [
                f"{kind} {name!r}"
                for kind, name, have in (
                    ("param", CACHE_PARAM, self.param_names),
                    ("param", CACHE_AGE_PARAM, self.param_names),
                    ("result", CACHE_RESULT, self.result_names),
                )
                if name not in have
            ]
            if lacking:
                raise SpecError(f"{where}: cache: true needs " + ", ".join(lacking))
        known = {
            "param": self.param_names,
            "result-path": self.result_names,
            "workspace-path": self.workspace_names,
            "workspace-bound": self.workspace_names,
        }
        for field, text in self.texts():
            try:
                found = list(refs.find(text))
            except ValueError as e:
                raise SpecError(f"{where}, {field}: {e}") from e
            for ref in found:
                if ref.kind not in TASK_REF_KINDS:
                    raise SpecError(f"{where}, {field}: {ref.text} is not allowed inside a task")
                if ref.name not in known[ref.kind]:
                    what = ref.kind.split("-")[0]
                    raise SpecError(f"{where}, {field}: {ref.text} names an unknown {what}")
        return self
