"""run-tests: run the project's pytest suite and keep a JUnit report."""

from taskyard.catalog._common import (
    MLFLOW_ENV,
    mlflow_param,
    mlflow_workspace,
    source_workspace,
    step_task,
)
from taskyard.spec import Param, Resources, Result

TASK = step_task(
    name="run-tests",
    module="run_tests",
    image="train",
    display_name="run tests",
    description=(
        "Runs the project's pytest suite, writes a JUnit XML report into the workspace and "
        "fails the task when any test fails, or when none is collected unless "
        "`allow-no-tests` is true. A project with its own `requirements.txt` (or `[project] "
        "dependencies`) is tested in its own environment on the local runner."
    ),
    categories=("Testing",),
    tags=("pytest", "test"),
    resources=Resources(cpu="1", memory="1Gi"),
    params=[
        Param(
            name="subdirectory",
            default="repo",
            description=(
                "Project folder in `source`: `repo` (where git-clone puts it), or "
                "`repo/<path>` for a project inside a monorepo."
            ),
        ),
        Param(
            name="pytest-args",
            default="",
            description="Extra pytest arguments, split like a shell would (e.g. `-k fast -x`).",
        ),
        Param(
            name="report",
            default="artifacts/junit.xml",
            description="Where to write the JUnit XML report, relative to `source`.",
        ),
        Param(
            name="allow-no-tests",
            type="boolean",
            default="false",
            description="Pass (with `passed` = 0) when the project has no tests to collect.",
        ),
        mlflow_param(),
    ],
    results=[
        Result(name="passed", description="Number of tests that passed."),
        Result(name="failed", description="Number of tests that failed or errored."),
        Result(name="report", description="Path of the JUnit report inside `source`."),
    ],
    workspaces=[
        source_workspace("Holds the cloned project; receives the report."),
        mlflow_workspace(),
    ],
    env=MLFLOW_ENV,
    cache=True,
    args=[
        "--source", "$(workspaces.source.path)",
        "--subdirectory", "$(params.subdirectory)",
        "--pytest-args", "$(params.pytest-args)",
        "--report", "$(params.report)",
        "--allow-no-tests", "$(params.allow-no-tests)",
    ],
)  # fmt: skip
