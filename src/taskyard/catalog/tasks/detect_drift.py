"""detect-drift: a current batch against the champion's training reference (KS, chi-square, PSI)."""

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
    name="detect-drift",
    module="detect_drift",
    image="train",
    display_name="detect data drift against the champion's training data",
    description=(
        "Compares a current batch (the project's data now, a CSV/Parquet/JSON file, or a model "
        "server's `/monitoring/window` of live inputs) with the reference profile `train` "
        "logged for the registered model's `champion`: per feature a two-sample KS test "
        "(numeric) or chi-square (categorical), corrected for the number of features, and the "
        "PSI. A feature drifted when it is significant AND its PSI reaches `min-psi`; the batch "
        "drifted when the share of drifted features is above `max-share`. No champion yet: "
        "`drifted` is true (the first model must be trained). Writes a JSON report and a PNG "
        "per drifted feature to the workspace and to MLflow."
    ),
    categories=("Machine Learning",),
    tags=("drift", "monitoring", "mlflow", "model-validation"),
    resources=Resources(cpu="1", memory="2Gi"),
    env=MLFLOW_ENV,
    network=True,  # the model server's window (--current http://…) is fetched over the network
    params=[
        *project_params(),
        Param(
            name="current",
            default="",
            description=(
                "The current batch: empty: the project's data; a `.csv`/`.parquet`/`.json` file "
                "(relative to the project); or `http(s)://HOST:PORT/monitoring/window`."
            ),
        ),
        Param(name="model-name", default="", description="Registered model; empty: the project."),
        Param(name="champion-alias", default="champion", description="Alias of the champion."),
        Param(name="alpha", type="number", default="0.05", description="Test significance."),
        Param(
            name="min-psi",
            type="number",
            default="0.1",
            description="Minimum PSI for a significant feature to count as drifted.",
        ),
        Param(
            name="max-share",
            type="number",
            default="0",
            description="Share of drifted features above which the batch drifted (0: any).",
        ),
        mlflow_param(),
    ],
    results=[
        Result(name="drifted", description='"true" when the batch drifted (or no champion yet).'),
        Result(name="score", description="Share of the compared features that drifted."),
        Result(name="drifted-features", description="The drifted features, largest PSI first."),
        Result(name="report", description="Path of the JSON report inside `source`."),
    ],
    workspaces=[
        source_workspace("Holds the cloned project; receives the report and plots."),
        mlflow_workspace(),
    ],
    args=[
        "--source", "$(workspaces.source.path)",
        "--subdirectory", "$(params.subdirectory)",
        "--config", "$(params.config)",
        "--current", "$(params.current)",
        "--model-name", "$(params.model-name)",
        "--champion-alias", "$(params.champion-alias)",
        "--alpha", "$(params.alpha)",
        "--min-psi", "$(params.min-psi)",
        "--max-share", "$(params.max-share)",
    ],
)  # fmt: skip
