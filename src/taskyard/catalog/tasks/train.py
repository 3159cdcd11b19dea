"""train / train-gpu: train the project's model and log it to MLflow.

One definition, two catalog entries: the GPU variant differs only in image, device and the
``nvidia.com/gpu`` request, so forking one forks both.
"""

from taskyard.catalog._common import (
    MLFLOW_ENV,
    mlflow_param,
    mlflow_workspace,
    project_params,
    source_workspace,
    step_task,
)
from taskyard.ml import DEVICES
from taskyard.spec import Param, Resources, Result, TaskSpec


def _train(name: str, image: str, resources: Resources, what: str) -> TaskSpec:
    return step_task(
        name=name,
        module="train",
        image=image,
        display_name=f"train ({what})",
        description=(
            f"Trains the project's model ({what}) with scikit-learn, xgboost or torch as its "
            "`taskyard.toml` says, and logs params, metrics and the model (with signature and "
            "pinned requirements) to MLflow, tagged with the git commit and a data hash."
        ),
        categories=("Machine Learning",),
        tags=("training", "mlflow", "scikit-learn", "xgboost", "pytorch"),
        resources=resources,
        env=MLFLOW_ENV,
        params=[
            *project_params(),
            Param(
                name="overrides",
                default="",
                description="Hyperparameter overrides, `key=value` pairs separated by commas.",
            ),
            Param(name="commit", default="", description="Git commit to tag the run with."),
            Param(
                name="model-name",
                default="",
                description="Registered model name; empty: the project's name from its config.",
            ),
            Param(
                name="device",
                enum=DEVICES,
                default="auto",
                description="`auto` (CUDA when present), `cpu` or `cuda`.",
            ),
            mlflow_param(),
        ],
        results=[
            Result(name="run-id", description="The MLflow run of this training."),
            Result(name="model-uri", description="URI of the logged model (`runs:/…`)."),
            Result(name="model-name", description="Registered model name used downstream."),
            Result(name="metric-name", description="The project's selection metric."),
            Result(name="metric-value", description="Its value on the holdout split."),
            Result(name="data-hash", description="SHA-256 of the training data."),
        ],
        workspaces=[source_workspace("Holds the cloned project."), mlflow_workspace()],
        cache=True,
        args=[
            "--source", "$(workspaces.source.path)",
            "--subdirectory", "$(params.subdirectory)",
            "--config", "$(params.config)",
            "--overrides", "$(params.overrides)",
            "--commit", "$(params.commit)",
            "--model-name", "$(params.model-name)",
            "--device", "$(params.device)",
        ],
    )  # fmt: skip


TASK = _train("train", "train", Resources(cpu="1", memory="2Gi"), "CPU")
GPU_TASK = _train("train-gpu", "train-gpu", Resources(cpu="2", memory="8Gi", gpu=1), "GPU")
