"""promote: register the candidate and move the `champion` alias to it (compare-and-set)."""

from taskyard.catalog._common import (
    MLFLOW_ENV,
    mlflow_param,
    mlflow_workspace,
    project_params,
    source_workspace,
    step_task,
)
from taskyard.spec import Param, Resources, Result

TASK = step_task(
    name="promote",
    module="promote",
    image="train",  # judging again loads the models: the ML frameworks must be there
    display_name="promote to champion",
    description=(
        "Registers the candidate as a new version in the MLflow Model Registry, moves the "
        "`champion` alias to it and keeps the old one as `previous-champion` (aliases, not the "
        "deprecated stages), and tags the version with its lineage. Compare-and-set: when "
        "`champion` no longer points at the version the candidate was evaluated against (a "
        "concurrent run promoted), the candidate is judged again against the new champion on "
        "the same holdout and promoted only if it still wins."
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
        Param(
            name="expected-champion",
            default="any",
            description=(
                "The champion version the candidate was evaluated against (evaluate's "
                "`champion-version`; empty: none). `any` skips the check."
            ),
        ),
        *project_params(),
        Param(
            name="min-score",
            type="number",
            default="",
            description="As evaluate's, for judging again; empty: the project config's.",
        ),
        Param(
            name="min-improvement",
            type="number",
            default="",
            description="As evaluate's, for judging again; empty: the project config's.",
        ),
        Param(name="commit", default="", description="Git commit (lineage tag)."),
        Param(name="data-hash", default="", description="Training data hash (lineage tag)."),
        Param(name="eval-run-id", default="", description="Evaluation run (lineage tag)."),
        mlflow_param(),
    ],
    results=[
        Result(
            name="promoted",
            description='"true" when the alias moved; "false" when judged again and declined.',
        ),
        Result(
            name="model-version",
            description="The version now holding the alias; empty when not promoted.",
        ),
        Result(name="previous-version", description="The version it replaced; empty if none."),
    ],
    workspaces=[
        source_workspace("Holds the cloned project (to judge again); receives the record."),
        mlflow_workspace(),
    ],
    args=[
        "--source", "$(workspaces.source.path)",
        "--model-uri", "$(params.model-uri)",
        "--model-name", "$(params.model-name)",
        "--alias", "$(params.alias)",
        "--previous-alias", "$(params.previous-alias)",
        "--expected-champion", "$(params.expected-champion)",
        "--subdirectory", "$(params.subdirectory)",
        "--config", "$(params.config)",
        "--min-score", "$(params.min-score)",
        "--min-improvement", "$(params.min-improvement)",
        "--commit", "$(params.commit)",
        "--data-hash", "$(params.data-hash)",
        "--eval-run-id", "$(params.eval-run-id)",
    ],
)  # fmt: skip
