"""XGBoost through its scikit-learn API (XGBClassifier / XGBRegressor), on CUDA when it can.

Logged with MLflow's xgboost flavor in XGBoost's own UBJSON format: no pickle, and the same
file serves on a CPU-only machine (the device is reset to ``cpu`` before logging).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskyard.errors import StepError
from taskyard.ml import BASE_REQUIREMENTS, FitSpec, check_params, pick_device, pins

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models.model import ModelInfo

RESERVED = {"device": "set it with --device", "objective": "it follows model.task"}


class XGBoostModel:
    def __init__(self, model: Any, params: dict[str, Any], device: str) -> None:
        self.model = model
        self.params = params
        self.device = device

    def log_model(self, name: str, input_example: pd.DataFrame) -> ModelInfo:
        import mlflow
        from mlflow.models import infer_signature

        self.model.set_params(device="cpu")  # serve anywhere; predicting needs no GPU
        return mlflow.xgboost.log_model(
            self.model,
            name=name,
            model_format="ubj",
            signature=infer_signature(input_example, self.model.predict(input_example)),
            input_example=input_example,
            pip_requirements=pins(
                ("mlflow", "mlflow-skinny"),
                ("xgboost", "xgboost-cpu"),
                "scikit-learn",
                *BASE_REQUIREMENTS[1:],
            ),
        )


def fit(spec: FitSpec, x: pd.DataFrame, y: pd.Series) -> XGBoostModel:
    import numpy as np
    import xgboost as xgb

    device = pick_device(spec.device, "xgboost", bool(xgb.build_info().get("USE_CUDA")))
    cls = xgb.XGBClassifier if spec.task == "classification" else xgb.XGBRegressor
    known = cls().get_params()
    check_params(spec.params, known, cls.__name__)
    for key, why in RESERVED.items():
        if key in spec.params:
            raise StepError(f"hyperparameter {key!r} is not settable for xgboost", why)
    if spec.task == "classification":
        classes = np.unique(y)
        if not np.array_equal(classes, np.arange(len(classes))):
            raise StepError(
                "xgboost needs class labels 0..n-1 in data.target",
                f"found {classes[:5].tolist()}; encode them in the data loader",
            )
    params = {"random_state": spec.seed, **spec.params, "device": device}
    try:
        model = cls(**params).fit(x, y)
    except (ValueError, TypeError, xgb.core.XGBoostError) as e:
        raise StepError(f"{cls.__name__} could not train: {str(e).splitlines()[0]}") from None
    effective = {k: v for k, v in model.get_params().items() if v is not None}
    return XGBoostModel(model, effective, device)
