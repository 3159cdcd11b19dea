"""evaluate: score the candidate and the current champion on the same holdout; decide."""

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
    name="evaluate",
    module="evaluate",
    image="train",
    display_name="evaluate challenger vs champion",
    description=(
        "Scores the candidate model and the registered model's current `champion` on the same "
        "holdout split, applies an absolute threshold and a minimum improvement "
        "(greater-is-better aware), writes a JSON and Markdown report, and decides `promote`."
    ),
    categories=("Machine Learning",),
    tags=("evaluation", "mlflow", "model-validation"),
    resources=Resources(cpu="1", memory="2Gi"),
    env=MLFLOW_ENV,
    params=[
        *project_params(),
        Param(name="model-uri", description="The candidate model (`runs:/…` or `models:/…`)."),
        Param(name="model-name", default="", description="Registered model to compare against."),
        Param(name="champion-alias", default="champion", description="Alias of the champion."),
        Param(
            name="min-score",
            type="number",
            default="",
            description="Absolute threshold on the metric; empty: the project config's value.",
        ),
        Param(
            name="min-improvement",
            type="number",
            default="",
            description="Minimum gain over the champion; empty: the project config's value.",
        ),
        mlflow_param(),
    ],
    results=[
        Result(name="promote", description='"true" when the candidate should become champion.'),
        Result(name="metric-name", description="The metric compared."),
        Result(name="candidate-score", description="The candidate's score on the holdout."),
        Result(name="champion-score", description="The champion's score; empty without one."),
        Result(name="champion-version", description="The champion's version; empty without one."),
        Result(name="eval-run-id", description="The MLflow run holding the evaluation."),
        Result(name="report", description="Path of the Markdown report inside `source`."),
    ],
    workspaces=[
        source_workspace("Holds the cloned project; receives the report."),
        mlflow_workspace(),
    ],
    cache=True,
    args=[
        "--source", "$(workspaces.source.path)",
        "--subdirectory", "$(params.subdirectory)",
        "--config", "$(params.config)",
        "--model-uri", "$(params.model-uri)",
        "--model-name", "$(params.model-name)",
        "--champion-alias", "$(params.champion-alias)",
        "--min-score", "$(params.min-score)",
        "--min-improvement", "$(params.min-improvement)",
    ],
)  # fmt: skip
