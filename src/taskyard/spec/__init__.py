"""The one definition of tasks and pipelines (pydantic v2; no I/O here)."""

from taskyard.spec.pipeline import (
    PipelineResult,
    PipelineSpec,
    PipelineTask,
    PipelineWorkspace,
    When,
)
from taskyard.spec.refs import (
    RUN_NAME,
    TASKS_STATUS,
    param,
    result,
    result_path,
    task_status,
    workspace_path,
)
from taskyard.spec.task import Param, Resources, Result, TaskSpec, Workspace

__all__ = [
    "RUN_NAME",
    "TASKS_STATUS",
    "Param",
    "PipelineResult",
    "PipelineSpec",
    "PipelineTask",
    "PipelineWorkspace",
    "Resources",
    "Result",
    "TaskSpec",
    "When",
    "Workspace",
    "param",
    "result",
    "result_path",
    "task_status",
    "workspace_path",
]
