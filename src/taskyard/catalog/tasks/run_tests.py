"""run-tests: run the project's pytest suite and keep a JUnit report."""

from taskyard.catalog._common import source_workspace, step_task
from taskyard.spec import Param, Resources, Result

TASK = step_task(
    name="run-tests",
    module="run_tests",
    image="train",
    display_name="run tests",
    description=(
        "Runs the project's pytest suite, writes a JUnit XML report into the workspace and "
        "fails the task when any test fails."
    ),
    categories=("Testing",),
    tags=("pytest", "test"),
    resources=Resources(cpu="1", memory="1Gi"),
    params=[
        Param(name="subdirectory", default="repo", description="Project folder in `source`."),
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
    ],
    results=[
        Result(name="passed", description="Number of tests that passed."),
        Result(name="failed", description="Number of tests that failed or errored."),
        Result(name="report", description="Path of the JUnit report inside `source`."),
    ],
    workspaces=[source_workspace("Holds the cloned project; receives the report.")],
    args=[
        "--source", "$(workspaces.source.path)",
        "--subdirectory", "$(params.subdirectory)",
        "--pytest-args", "$(params.pytest-args)",
        "--report", "$(params.report)",
    ],
)  # fmt: skip
