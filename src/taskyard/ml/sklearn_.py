"""scikit-learn: any estimator class by dotted path, with the config's params.

Serialization: **skops** (MLflow's default since 3.x), chosen on purpose. Unlike pickle and
cloudpickle, loading a skops file only rebuilds types on an allow-list, so pulling a champion
from the registry cannot run arbitrary code. The allow-list is what this very model holds,
restricted to scikit-learn, NumPy and SciPy types; a model with anything else (a custom class
from the project) fails here with a clear error instead of at serving time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from taskyard.errors import StepError
from taskyard.ml import BASE_REQUIREMENTS, FitSpec, check_params, pins

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models.model import ModelInfo

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


def _estimator_class(path: str) -> type:
    module_name, _, name = path.rpartition(".")
    if not module_name.startswith("sklearn."):
        raise StepError(f"model.estimator {path!r} must be a scikit-learn class (sklearn.…)")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise StepError(f"model.estimator: no class {path!r} in scikit-learn") from None
    if not (isinstance(cls, type) and hasattr(cls, "fit") and hasattr(cls, "get_params")):
        raise StepError(f"model.estimator: {path!r} is not a scikit-learn estimator")
    return cls


class SklearnModel:
    def __init__(self, estimator: Any, params: dict[str, Any]) -> None:
        self.estimator = estimator
        self.params = params
        self.device = "cpu"

    def log_model(self, name: str, input_example: pd.DataFrame) -> ModelInfo:
        import mlflow
        import skops.io
        from mlflow.models import infer_signature

        untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(self.estimator))
        odd = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
        if odd:
            raise StepError(
                f"the model holds types skops will not load safely: {', '.join(odd)}",
                "use scikit-learn estimators only",
            )
        return mlflow.sklearn.log_model(
            self.estimator,
            name=name,
            serialization_format="skops",
            skops_trusted_types=untrusted,
            signature=infer_signature(input_example, self.estimator.predict(input_example)),
            input_example=input_example,
            pip_requirements=pins(
                ("mlflow", "mlflow-skinny"), "scikit-learn", "skops", *BASE_REQUIREMENTS[1:]
            ),
        )


def fit(spec: FitSpec, x: pd.DataFrame, y: pd.Series) -> SklearnModel:
    from sklearn.base import is_classifier, is_regressor

    assert spec.estimator is not None
    if spec.device == "cuda":
        raise StepError("--device cuda: scikit-learn trains on the CPU", "use --device auto")
    cls = _estimator_class(spec.estimator)
    probe = cls()
    fits_task = is_classifier if spec.task == "classification" else is_regressor
    if not fits_task(probe):
        raise StepError(f"model.estimator {spec.estimator} does not do {spec.task}")
    known = probe.get_params(deep=False)
    check_params(spec.params, known, spec.estimator)
    params = dict(spec.params)
    if "random_state" in known and "random_state" not in params:
        params["random_state"] = spec.seed  # reproducible by default
    try:
        estimator = cls(**params).fit(x, y)
    except (ValueError, TypeError) as e:
        raise StepError(f"{cls.__name__} could not train: {e}") from None
    return SklearnModel(estimator, {**known, **params})
