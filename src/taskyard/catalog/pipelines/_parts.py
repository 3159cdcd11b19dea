"""Pipeline pieces the catalog pipelines share (params, the clone task, the report)."""

from __future__ import annotations

from taskyard.catalog.tasks import git_clone, report
from taskyard.spec import (
    RUN_NAME,
    TASKS_STATUS,
    Param,
    PipelineTask,
    PipelineWorkspace,
    param,
)

GIT_PARAMS = [
    Param(name="repo-url", description="The ML project's git repository."),
    Param(name="revision", default="", description="Branch, tag or commit; empty: remote HEAD."),
    Param(
        name="allow-file-url",
        type="boolean",
        default="false",
        description="Let git-clone use file:// URLs and local paths (local runs, tests).",
    ),
]
MLFLOW_PARAM = Param(
    name="mlflow-tracking-uri",
    default="",
    description="MLflow tracking URI; empty: the local runner's SQLite store.",
)
WORKSPACES = [
    PipelineWorkspace(name="source", description="Shared by every task of the run."),
    PipelineWorkspace(
        name="git-credentials",
        optional=True,
        description="`.git-credentials` + `.gitconfig` for private HTTPS repositories.",
    ),
    PipelineWorkspace(
        name="ssh-directory",
        optional=True,
        description="A `.ssh` folder for private ssh repositories.",
    ),
]

MLFLOW_WORKSPACE = PipelineWorkspace(
    name="mlflow",
    optional=True,
    description="MLflow credentials for the ML tasks (a Secret; see the train task's README).",
)


def clone_task() -> PipelineTask:
    return PipelineTask(
        name="clone",
        task=git_clone.TASK,
        params={
            "url": param("repo-url"),
            "revision": param("revision"),
            "allow-file": param("allow-file-url"),
        },
        workspaces={
            "output": "source",
            "git-credentials": "git-credentials",
            "ssh-directory": "ssh-directory",
        },
        retries=2,
        timeout=600,
    )


def report_task(pipeline: str) -> PipelineTask:
    return PipelineTask(
        name="report",
        task=report.TASK,
        params={"status": TASKS_STATUS, "run-name": RUN_NAME, "pipeline": pipeline},
        workspaces={"source": "source"},
        timeout=300,
    )
