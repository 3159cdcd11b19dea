"""Definition-time validation: every inconsistency is caught with the pipeline, task and field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from taskyard.catalog import PIPELINES, TASKS, get_pipeline, get_task
from taskyard.errors import CatalogError, SpecError
from taskyard.spec import (
    Param,
    PipelineSpec,
    PipelineTask,
    PipelineWorkspace,
    Result,
    TaskSpec,
    When,
    Workspace,
    param,
    refs,
    result,
)

ECHO = TaskSpec(
    name="echo",
    display_name="echo",
    description="prints a value",
    image="python:3.11-slim",
    command=("python", "-c", "import sys; print(sys.argv[1])"),
    args=("$(params.value)", "$(results.out.path)", "$(workspaces.data.path)"),
    params=(Param(name="value"), Param(name="extra", default="x")),
    results=(Result(name="out"),),
    workspaces=(Workspace(name="data"), Workspace(name="creds", optional=True)),
)


def pipeline(*tasks: PipelineTask, finally_: tuple[PipelineTask, ...] = (), **kw) -> PipelineSpec:
    return PipelineSpec(
        name=kw.pop("name", "p"),
        display_name="p",
        description="d",
        params=kw.pop("params", (Param(name="v", default="1"),)),
        workspaces=(PipelineWorkspace(name="ws"),),
        tasks=tasks,
        finally_=finally_,
        **kw,
    )


def use(name: str, **kw) -> PipelineTask:
    kw.setdefault("params", {"value": param("v")})
    kw.setdefault("workspaces", {"data": "ws"})
    return PipelineTask(name=name, task=ECHO, **kw)


def test_catalog_pipelines_are_valid_and_ordered():
    tde = PIPELINES["train-eval-deploy"]
    assert tde.order() == ["clone", "test", "train", "evaluate", "promote", "deploy"]
    assert [t.name for t in tde.finally_] == ["report"]
    assert PIPELINES["retrain"].order() == ["clone", "train", "evaluate", "promote", "deploy"]
    assert PIPELINES["ci"].order() == ["clone", "test"]
    # the gate is a when on evaluate's promote result, on both promote and deploy
    for name in ("promote", "deploy"):
        (gate,) = tde.get(name).when
        assert (gate.input, gate.operator, gate.values) == (
            "$(tasks.evaluate.results.promote)",
            "in",
            ("true",),
        )


def test_result_refs_imply_dependencies():
    p = PIPELINES["train-eval-deploy"]
    assert p.dependencies(p.get("evaluate")) == {"train"}
    assert p.dependencies(p.get("promote")) == {"clone", "train", "evaluate"}
    assert p.dependencies(p.get("report")) == set()


def test_every_task_passes_params_as_args_not_scripts():
    for task in TASKS.values():
        assert task.command[:2] == ("python", "-m")
        assert task.image == "$(params.image)"
        assert task.param("image").default.endswith(":0.1.0")
        for r in task.results:
            assert task.env["TASKYARD_RESULT_" + r.name.upper().replace("-", "_")] == (
                f"$(results.{r.name}.path)"
            )


def test_gpu_task_requests_a_gpu():
    assert TASKS["train-gpu"].resources.gpu == 1
    assert TASKS["train"].resources.gpu == 0
    assert PIPELINES["train-eval-deploy-gpu"].get("train").task.name == "train-gpu"


def test_refs_parse_and_substitute():
    text = "a $(params.x) b $(tasks.t.results.r) c $(context.pipelineRun.name)"
    assert [r.kind for r in refs.find(text)] == ["param", "task-result", "run-name"]
    out = refs.substitute(text, lambda r: f"<{r.kind}:{r.task}:{r.name}>")
    assert out == "a <param::x> b <task-result:t:r> c <run-name::>"
    with pytest.raises(ValueError, match=r"unknown reference \$\(params\)"):
        list(refs.find("$(params)"))


def test_catalog_lookup_errors_suggest():
    with pytest.raises(
        CatalogError, match=r"unknown pipeline 'train-eval-deplo'.*train-eval-deploy"
    ):
        get_pipeline("train-eval-deplo")
    with pytest.raises(CatalogError, match="unknown task 'nope'"):
        get_task("nope")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: pipeline(use("a"), use("a")), "pipeline 'p': duplicate task name 'a'"),
        (
            lambda: pipeline(use("a", params={"value": "1", "bogus": "2"})),
            "pipeline 'p', task 'a': params.bogus is not a param of task 'echo'",
        ),
        (
            lambda: pipeline(use("a", params={})),
            "pipeline 'p', task 'a': required param 'value' is not bound",
        ),
        (
            lambda: pipeline(use("a", params={"value": param("nope")})),
            r"pipeline 'p', task 'a', params.value: \$\(params.nope\) names an unknown pipeline",
        ),
        (
            lambda: pipeline(use("a", params={"value": result("ghost", "out")})),
            r"task 'a', params.value: \$\(tasks.ghost.results.out\) names an unknown task",
        ),
        (
            lambda: pipeline(use("a"), use("b", params={"value": result("a", "nope")})),
            "task 'a' has no result 'nope'",
        ),
        (
            lambda: pipeline(use("a", workspaces={})),
            "pipeline 'p', task 'a': required workspace 'data' is not bound",
        ),
        (
            lambda: pipeline(use("a", workspaces={"data": "elsewhere"})),
            "workspaces.data binds unknown workspace 'elsewhere'",
        ),
        (
            lambda: pipeline(use("a", run_after=("zzz",))),
            "task 'a': run_after names unknown task 'zzz'",
        ),
        (
            lambda: pipeline(
                use("a", params={"value": result("b", "out")}),
                use("b", params={"value": result("a", "out")}),
            ),
            "pipeline 'p': dependency cycle among a -> b",
        ),
        (
            lambda: pipeline(use("a", params={"value": "$(tasks.status)"})),
            r"\$\(tasks.status\) is not allowed here",
        ),
        (
            lambda: pipeline(use("a"), finally_=(use("f", run_after=("a",)),)),
            "a finally task cannot use run_after",
        ),
        (
            lambda: pipeline(use("a", when=(When(input="$(params.zz)", values=("1",)),))),
            r"when\[0\].input: \$\(params.zz\) names an unknown pipeline param",
        ),
    ],
)
def test_pipeline_validation_names_pipeline_task_and_field(build, message):
    with pytest.raises(SpecError, match=message):
        build()


def test_finally_may_read_statuses_and_optional_workspaces_may_stay_unbound():
    p = pipeline(use("a"), finally_=(use("f", params={"value": "$(tasks.a.status)"}),))
    assert p.is_finally("f") and p.order() == ["a"]


def test_task_validation():
    with pytest.raises(SpecError, match=r"task 'bad', args\[0\]: \$\(params.nope\) names an"):
        TaskSpec(
            name="bad",
            display_name="b",
            description="d",
            image="i",
            command=("true",),
            args=("$(params.nope)",),
        )
    with pytest.raises(SpecError, match="not allowed inside a task"):
        TaskSpec(
            name="bad",
            display_name="b",
            description="d",
            image="i",
            command=("echo", "$(tasks.x.results.y)"),
        )
    with pytest.raises(ValidationError, match="not a valid name"):
        TaskSpec(name="Bad_Name", display_name="b", description="d", image="i", command=("x",))
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TaskSpec(name="ok", display_name="b", description="d", image="i", command=("x",), imgae="z")


TYPED = TaskSpec(
    name="typed",
    display_name="typed",
    description="typed params",
    image="i",
    command=("true",),
    params=(
        Param(name="n", type="integer", default="1"),
        Param(name="x", type="number", default=""),
        Param(name="flag", type="boolean", default="true"),
        Param(name="mode", enum=("a", "b"), default="a"),
    ),
)


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("n", "12", None),
        ("n", "-3", None),
        ("n", "1.5", "'1.5' is not an integer"),
        ("x", "0.25", None),
        ("x", "1e-3", None),
        ("x", "nan", "'nan' is not a number"),
        ("x", "fast", "'fast' is not a number"),
        ("flag", "false", None),
        ("flag", "yes", "'yes' is not one of true, false"),
        ("mode", "b", None),
        ("mode", "c", "'c' is not one of a, b"),
        ("n", "", None),  # "" is "not set" for every type: the step's own default applies
    ],
)
def test_typed_params_say_which_strings_they_accept(name, value, why):
    assert TYPED.param(name).problem(value) == why


def test_typed_param_definitions_are_checked():
    with pytest.raises(ValidationError, match="param 'n': default 'one' is not an integer"):
        Param(name="n", type="integer", default="one")
    with pytest.raises(ValidationError, match="a boolean takes no enum"):
        Param(name="b", type="boolean", enum=("true",))
    with pytest.raises(ValidationError, match="enum value 'x' is not a integer"):
        Param(name="n", type="integer", enum=("1", "x"))


def _typed_pipeline(params: dict[str, str], pipeline_params: tuple[Param, ...] = ()):
    return PipelineSpec(
        name="p",
        display_name="p",
        description="d",
        params=pipeline_params,
        tasks=(PipelineTask(name="t", task=TYPED, params=params),),
    )


def test_pipelines_bind_typed_params_consistently():
    _typed_pipeline({"n": "3", "mode": "b"})
    with pytest.raises(SpecError, match=r"task 't': params.n: 'three' is not an integer"):
        _typed_pipeline({"n": "three"})
    with pytest.raises(SpecError, match=r"params.flag takes a boolean; declare pipeline param 'f'"):
        _typed_pipeline({"flag": param("f")}, (Param(name="f", default="true"),))
    with pytest.raises(SpecError, match=r"params.mode takes a string in a, b"):
        _typed_pipeline({"mode": param("m")}, (Param(name="m", enum=("a", "z")),))
    _typed_pipeline({"mode": param("m")}, (Param(name="m", enum=("b",)),))  # stricter is fine
    _typed_pipeline({"n": "$(params.k)-1"}, (Param(name="k"),))  # a template: checked at run time


def test_the_catalog_declares_its_typed_params():
    clone = TASKS["git-clone"]
    assert clone.param("depth").type == "integer"
    assert clone.param("submodules").type == "boolean"
    assert TASKS["train"].param("device").enum == ("auto", "cpu", "cuda")
    tedp = get_pipeline("train-eval-deploy")
    assert tedp.param("keep-serving").type == "boolean"
    assert tedp.param("deploy-port").type == "integer"
    assert tedp.param("min-score").type == "number"


def test_specs_are_frozen():
    with pytest.raises(ValidationError):
        ECHO.name = "other"  # type: ignore[misc]
