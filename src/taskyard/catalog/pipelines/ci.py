"""ci: clone and test; for pull requests and every push."""

from taskyard.catalog.pipelines._parts import (
    ALLOW_NO_TESTS_PARAM,
    GIT_PARAMS,
    MLFLOW_PARAM,
    MLFLOW_WORKSPACE,
    SUBDIRECTORY_PARAM,
    WORKSPACES,
    clone_task,
    report_task,
    test_task,
    with_images,
)
from taskyard.spec import Param, PipelineResult, PipelineSpec, result

_TASKS, _IMAGES = with_images(
    [
        clone_task(),
        test_task(),
        report_task("ci"),
    ]
)

PIPELINE = PipelineSpec(
    name="ci",
    display_name="CI: clone and test",
    description="Clones the project at a revision and runs its pytest suite.",
    categories=("CI",),
    tags=("ci", "pytest"),
    params=(
        *GIT_PARAMS,
        SUBDIRECTORY_PARAM,
        Param(name="pytest-args", default="", description="Extra pytest arguments."),
        ALLOW_NO_TESTS_PARAM,
        MLFLOW_PARAM,
        *_IMAGES,
    ),
    workspaces=(*WORKSPACES, MLFLOW_WORKSPACE),
    tasks=_TASKS[:-1],
    finally_=_TASKS[-1:],
    results=(
        PipelineResult(name="commit", value=result("clone", "commit")),
        PipelineResult(name="tests-passed", value=result("test", "passed")),
        PipelineResult(name="tests-failed", value=result("test", "failed")),
    ),
    timeout=3600,
)
