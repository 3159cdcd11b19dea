"""What a pipeline is: a DAG of tasks with bindings, gates and finally tasks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field, field_validator, model_validator

from taskyard.errors import SpecError
from taskyard.spec import refs
from taskyard.spec._base import PARAM_RE, SpecModel, check_name
from taskyard.spec.task import Param, TaskSpec


class When(SpecModel):
    """Run the task only if ``input`` (a reference) is / is not one of ``values``."""

    input: str
    operator: Literal["in", "notin"] = "in"
    values: tuple[str, ...]


def array_params(task: TaskSpec) -> set[str]:
    """The task's params it expands as arrays (``$(params.NAME[*])``): Tekton ``type: array``."""
    return {r.name for _, text in task.texts() for r in refs.find(text) if r.array}


# Tekton's default cap on one matrix's TaskRuns (docs/matrix.md "Concurrency Control": "The
# default maximum count of TaskRuns or Runs from a given Matrix is 256", config
# `default-max-matrix-combinations-count`); more fails the Pipeline's validation there.
MAX_COMBINATIONS = 256


class PipelineTask(SpecModel):
    """A use of a catalog task inside a pipeline.

    ``matrix`` fans the task out: one run per combination of the listed values (the cross
    product, in Tekton's order: the first param varies slowest, docs/matrix.md "Generating
    Combinations"), with the task's other params as bound. Downstream tasks then read its
    results only whole, as arrays (``$(tasks.T.results.R[*])``, :mod:`taskyard.spec.refs`).
    """

    name: str
    task: TaskSpec
    params: dict[str, str] = Field(default_factory=dict)
    # task param -> its values (literals); the task runs once per combination.
    matrix: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # task workspace name -> pipeline workspace name
    workspaces: dict[str, str] = Field(default_factory=dict)
    run_after: tuple[str, ...] = ()
    when: tuple[When, ...] = ()
    retries: int = Field(default=0, ge=0)
    timeout: int | None = Field(default=None, gt=0, description="seconds")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "pipeline task")

    def texts(self) -> list[tuple[str, str]]:
        """Every (field, text) that may hold a pipeline-level reference."""
        out = [(f"params.{k}", v) for k, v in self.params.items()]
        out += [(f"when[{i}].input", w.input) for i, w in enumerate(self.when)]
        return out

    def refs(self) -> Iterator[refs.Ref]:
        for _, text in self.texts():
            yield from refs.find(text)

    def combinations(self) -> list[dict[str, str]]:
        """The matrix's combinations in order (``[{}]``, one run, without a matrix)."""
        out: list[dict[str, str]] = [{}]
        for name, values in self.matrix.items():
            out = [{**c, name: v} for c in out for v in values]
        return out

    def resolved_params(self) -> dict[str, str]:
        """The task's params with defaults filled in and the bindings on top."""
        out = {p.name: p.default for p in self.task.params if p.default is not None}
        out.update(self.params)
        return out


class PipelineWorkspace(SpecModel):
    name: str
    description: str = ""
    optional: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "workspace")


class PipelineResult(SpecModel):
    name: str
    description: str = ""
    value: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "result", PARAM_RE)


_PIPELINE_REF_KINDS = {"param", "task-result", "run-name"}
_FINALLY_REF_KINDS = _PIPELINE_REF_KINDS | {"task-status", "tasks-status"}


class PipelineSpec(SpecModel):
    """A DAG of tasks; ``finally`` tasks run after all others whatever their outcome."""

    name: str
    version: str = "0.1"
    display_name: str
    description: str
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    params: tuple[Param, ...] = ()
    workspaces: tuple[PipelineWorkspace, ...] = ()
    tasks: tuple[PipelineTask, ...]
    finally_: tuple[PipelineTask, ...] = Field(default=(), alias="finally")
    results: tuple[PipelineResult, ...] = ()
    timeout: int | None = Field(default=None, gt=0, description="seconds")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "pipeline")

    # ---- graph -------------------------------------------------------------------------
    @property
    def all_tasks(self) -> tuple[PipelineTask, ...]:
        return self.tasks + self.finally_

    def get(self, name: str) -> PipelineTask:
        for t in self.all_tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def is_finally(self, name: str) -> bool:
        return any(t.name == name for t in self.finally_)

    def dependencies(self, task: PipelineTask) -> set[str]:
        """``run_after`` plus every task whose result the task consumes (as Tekton infers)."""
        deps = set(task.run_after)
        deps |= {r.task for r in task.refs() if r.kind == "task-result"}
        if self.is_finally(task.name):
            return set()  # finally tasks wait for the whole DAG, not for single tasks
        return deps

    def order(self) -> list[str]:
        """A stable topological order of the (non-finally) tasks."""
        deps = {t.name: self.dependencies(t) for t in self.tasks}
        done: list[str] = []
        pending = [t.name for t in self.tasks]
        while pending:
            ready = [n for n in pending if deps[n] <= set(done)]
            if not ready:
                cycle = " -> ".join(sorted(pending))
                raise SpecError(f"pipeline {self.name!r}: dependency cycle among {cycle}")
            done += ready
            pending = [n for n in pending if n not in ready]
        return done

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    # ---- validation --------------------------------------------------------------------
    @model_validator(mode="after")
    def _check(self) -> PipelineSpec:
        where = f"pipeline {self.name!r}"
        names = [t.name for t in self.all_tasks]
        for kind, values in (
            ("task", names),
            ("param", [p.name for p in self.params]),
            ("workspace", [w.name for w in self.workspaces]),
            ("result", [r.name for r in self.results]),
        ):
            dup = sorted({n for n in values if values.count(n) > 1})
            if dup:
                raise SpecError(f"{where}: duplicate {kind} name {dup[0]!r}")
        regular = {t.name: t for t in self.tasks}
        params = {p.name for p in self.params}
        spaces = {w.name for w in self.workspaces}
        for t in self.all_tasks:
            self._check_task(t, regular, params, spaces)
        for r in self.results:
            self._check_refs(f"{where}, result {r.name!r}", r.value, regular, params, False)
        self.order()
        return self

    def _check_task(
        self,
        t: PipelineTask,
        regular: dict[str, PipelineTask],
        params: set[str],
        spaces: set[str],
    ) -> None:
        where = f"pipeline {self.name!r}, task {t.name!r}"
        fin = self.is_finally(t.name)
        for key in t.params:
            if key not in t.task.param_names:
                raise SpecError(f"{where}: params.{key} is not a param of task {t.task.name!r}")
        self._check_matrix(where, t, fin)
        arrays = array_params(t.task)
        for key in sorted(arrays):
            found = list(refs.find(t.params.get(key, "")))
            if key in t.matrix or not (len(found) == 1 and found[0].array):
                raise SpecError(
                    f"{where}: params.{key} is an array param of task {t.task.name!r}; bind it "
                    "to a matrixed task's results ($(tasks.T.results.R[*]))"
                )
        for key, text in t.params.items():
            if key not in arrays and any(r.array for r in refs.find(text)):
                raise SpecError(
                    f"{where}: params.{key}: task {t.task.name!r} takes it as a string; an "
                    f"array goes only to a param the task expands as $(params.{key}[*])"
                )
        for p in t.task.params:
            if p.name in t.matrix:
                continue
            if p.required and p.name not in t.params:
                raise SpecError(f"{where}: required param {p.name!r} is not bound")
            if p.name in t.params:
                self._check_param_type(where, p, t.params[p.name])
        for key, value in t.workspaces.items():
            if key not in t.task.workspace_names:
                raise SpecError(
                    f"{where}: workspaces.{key} is not a workspace of task {t.task.name!r}"
                )
            if value not in spaces:
                raise SpecError(f"{where}: workspaces.{key} binds unknown workspace {value!r}")
        for w in t.task.workspaces:
            if not w.optional and w.name not in t.workspaces:
                raise SpecError(f"{where}: required workspace {w.name!r} is not bound")
        for dep in t.run_after:
            if fin:
                raise SpecError(f"{where}: a finally task cannot use run_after")
            if dep not in regular:
                raise SpecError(f"{where}: run_after names unknown task {dep!r}")
        for field, text in t.texts():
            self._check_refs(f"{where}, {field}", text, regular, params, fin, self_name=t.name)

    def _check_matrix(self, where: str, t: PipelineTask, fin: bool) -> None:
        if not t.matrix:
            return
        if fin:
            raise SpecError(f"{where}: a finally task cannot have a matrix")
        count = 1
        for key, values in t.matrix.items():
            if key not in t.task.param_names:
                raise SpecError(f"{where}: matrix.{key} is not a param of task {t.task.name!r}")
            if key in t.params:
                raise SpecError(f"{where}: {key!r} is both in params and in matrix")
            if not values:
                raise SpecError(f"{where}: matrix.{key} has no values")
            for v in values:
                if any(True for _ in refs.find(v)):
                    raise SpecError(f"{where}: matrix.{key}: values are literals, got {v!r}")
                if why := t.task.param(key).problem(v):
                    raise SpecError(f"{where}: matrix.{key}: {why}")
            count *= len(values)
        if count > MAX_COMBINATIONS:
            raise SpecError(
                f"{where}: the matrix makes {count} combinations; Tekton's default cap is "
                f"{MAX_COMBINATIONS} (default-max-matrix-combinations-count)"
            )

    def _check_param_type(self, where: str, p: Param, text: str) -> None:
        """A literal must fit the task param; a pipeline param passed on whole must be as strict."""
        if not any(True for _ in refs.find(text)):
            if why := p.problem(text):
                raise SpecError(f"{where}: params.{p.name}: {why}")
            return
        if p.type == "string" and not p.enum:
            return
        for pp in self.params:
            if text != refs.param(pp.name):
                continue
            looser = pp.type != p.type or (p.enum and not pp.enum)
            if looser or not set(pp.enum) <= set(p.enum):
                want = p.type + (f" in {', '.join(p.enum)}" if p.enum else "")
                raise SpecError(
                    f"{where}: params.{p.name} takes a {want}; declare pipeline param "
                    f"{pp.name!r} the same way (it is a {pp.type})"
                )

    def _check_refs(
        self,
        where: str,
        text: str,
        regular: dict[str, PipelineTask],
        params: set[str],
        fin: bool,
        self_name: str = "",
    ) -> None:
        allowed = _FINALLY_REF_KINDS if fin else _PIPELINE_REF_KINDS
        try:
            found = list(refs.find(text))
        except ValueError as e:
            raise SpecError(f"{where}: {e}") from e
        for ref in found:
            if ref.kind not in allowed:
                raise SpecError(f"{where}: {ref.text} is not allowed here")
            if ref.kind == "param" and ref.name not in params:
                raise SpecError(f"{where}: {ref.text} names an unknown pipeline param")
            if ref.kind in ("task-result", "task-status"):
                if ref.task == self_name:
                    raise SpecError(f"{where}: {ref.text} refers to the task itself")
                if ref.task not in regular:
                    raise SpecError(f"{where}: {ref.text} names an unknown task")
            if ref.kind == "task-result" and ref.name not in regular[ref.task].task.result_names:
                raise SpecError(
                    f"{where}: {ref.text}: task {ref.task!r} has no result {ref.name!r}"
                )
            self._check_array(where, text, ref, regular, fin)

    def _check_array(
        self, where: str, text: str, ref: refs.Ref, regular: dict[str, PipelineTask], fin: bool
    ) -> None:
        """Arrays only as Tekton takes them: a matrixed task's results, whole, into a param.

        docs/matrix.md: a fanned-out task's results are consumed only whole with ``[*]``
        ("not being able to consume a singular result"), into an array param; pipeline params
        here are strings, so ``$(params.x[*])`` has no meaning at this level.
        """
        if ref.kind == "param" and ref.array:
            raise SpecError(f"{where}: {ref.text}: pipeline params are strings, not arrays")
        if ref.kind != "task-result":
            return
        matrixed = bool(regular[ref.task].matrix)
        if matrixed and not ref.array:
            raise SpecError(
                f"{where}: {ref.text}: task {ref.task!r} has a matrix; read its results whole "
                f"as {refs.results(ref.task, ref.name)}"
            )
        if ref.array and not matrixed:
            raise SpecError(f"{where}: {ref.text}: task {ref.task!r} has no matrix")
        if ref.array and (
            text != ref.text or fin or not where.split(", ")[-1].startswith("params.")
        ):
            raise SpecError(
                f"{where}: {ref.text} must be a task param's whole value (an array param)"
            )
