"""promote: register the candidate and move the `champion` alias to it."""

from taskyard.catalog._common import (
    MLFLOW_ENV,
    mlflow_param,
    mlflow_workspace,
    source_workspace,
    step_task,
)
from taskyard.spec import Param, Resources, Result

TASK = step_task(
    name="promote",
    module="promote",
    image="steps",
    display_name="promote to champion",
    description=(
        "Registers the candidate as a new version in the MLflow Model Registry, moves the "
        "`champion` alias to it and keeps the old one as `previous-champion` (aliases, not the "
        "deprecated stages), and tags the version with its lineage."
    ),
    categories=("Machine Learning",),
    tags=("mlflow", "model-registry"),
    resources=Resources(cpu="250m", memory="512Mi"),
    env=MLFLOW_ENV,
    params=[
        Param(name="model-uri", description="The model to register (`runs:/…`)."),
        Param(name="model-name", description="Registered model name."),
        Param(name="alias", default="champion", description="Alias to move to the new version."),
        Param(
            name="previous-alias",
            default="previous-champion",
            description="Alias that keeps the version the alias pointed at before.",
        ),
        Param(name="commit", default="", description="Git commit (lineage tag)."),
        Param(name="data-hash", default="", description="Training data hash (lineage tag)."),
        Param(name="eval-run-id", default="", description="Evaluation run (lineage tag)."),
        mlflow_param(),
    ],
    results=[
        Result(name="model-version", description="The version now holding the alias."),
        Result(name="previous-version", description="The version it replaced; empty if none."),
    ],
    workspaces=[source_workspace("Receives the promotion record."), mlflow_workspace()],
    args=[
        "--source", "$(workspaces.source.path)",
        "--model-uri", "$(params.model-uri)",
        "--model-name", "$(params.model-name)",
        "--alias", "$(params.alias)",
        "--previous-alias", "$(params.previous-alias)",
        "--commit", "$(params.commit)",
        "--data-hash", "$(params.data-hash)",
        "--eval-run-id", "$(params.eval-run-id)",
    ],
)  # fmt: skip
