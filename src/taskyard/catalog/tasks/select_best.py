"""select-best: pick the best trial of a sweep, by the project's metric read from MLflow.

Its results are train's, shaped the same, so evaluate and promote take the winner unchanged.
``run-ids`` is an array param: Tekton hands a fanned-out task's results only to one
(tektoncd/pipeline docs/matrix.md "Results from fanned out Matrixed PipelineTasks"), expanded
here into separate args; Argo and the local runner pass the same list as one JSON string.
"""

from taskyard.catalog._common import (
    MLFLOW_ENV,
    mlflow_param,
    mlflow_workspace,
    project_params,
    source_workspace,
    step_task,
)
from taskyard.spec import Param, Resources, Result
from taskyard.spec.refs import array_param

TASK = step_task(
    name="select-best",
    module="select_best",
    image="train",  # needs mlflow and the project config reader; no framework is loaded
    display_name="select the best trial of a sweep",
    description=(
        "Reads each trial's metric from its MLflow run (never from a passed value), picks the "
        "best by the metric's direction (ties: the first trial), nests the trials under one "
        "`sweep-<commit>` parent run, and writes the winner's results in train's shape."
    ),
    categories=("Machine Learning",),
    tags=("training", "hyperparameter-tuning", "mlflow"),
    resources=Resources(cpu="100m", memory="512Mi"),
    env=MLFLOW_ENV,
    params=[
        *project_params(),
        Param(
            name="run-ids",
            description="The trials' MLflow runs (train's `run-id` of every combination).",
        ),
        Param(
            name="metric-name",
            default="",
            description="The metric to select by; empty: the project config's metric.",
        ),
        Param(name="commit", default="", description="Git commit (names the sweep's run)."),
        mlflow_param(),
    ],
    results=[
        Result(name="run-id", description="The best trial's MLflow run."),
        Result(name="model-uri", description="URI of its model (`runs:/…`)."),
        Result(name="model-name", description="Registered model name used downstream."),
        Result(name="metric-name", description="The selection metric."),
        Result(name="metric-value", description="The best trial's value of it."),
        Result(name="data-hash", description="SHA-256 of the training data."),
        Result(name="sweep-run-id", description="The parent MLflow run of the sweep."),
    ],
    workspaces=[source_workspace("Holds the cloned project."), mlflow_workspace()],
    args=[
        "--source", "$(workspaces.source.path)",
        "--subdirectory", "$(params.subdirectory)",
        "--config", "$(params.config)",
        "--metric-name", "$(params.metric-name)",
        "--commit", "$(params.commit)",
        "--",
        array_param("run-ids"),
    ],
)  # fmt: skip
