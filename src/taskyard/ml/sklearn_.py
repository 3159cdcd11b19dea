"""scikit-learn: any estimator class by dotted path, with the config's params.

Serialization: **skops** (MLflow's default since 3.x), chosen on purpose. Unlike pickle and
cloudpickle, loading a skops file only rebuilds types on an allow-list, so pulling a champion
from the registry cannot run arbitrary code. The allow-list is what this very model holds,
restricted to what :mod:`taskyard.ml.trust` allows (the libraries, and for a project's own
model its modules and declared packages); anything else fails here with the type named,
instead of at serving time. The same logging serves ``model.factory`` estimators.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskyard.errors import StepError
from taskyard.ml import BASE_REQUIREMENTS, FitSpec, check_params, pins, trust

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models.model import ModelInfo


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
    """A fitted estimator; ``root`` is the project folder when the project built it."""

    def __init__(self, estimator: Any, params: dict[str, Any], root: Path | None = None) -> None:
        self.estimator = estimator
        self.params = params
        self.device = "cpu"
        self.root = root

    def log_model(self, name: str, input_example: pd.DataFrame) -> ModelInfo:
        import mlflow
        import skops.io
        from mlflow.models import infer_signature

        untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(self.estimator))
        types = trust.trusted(untrusted, self.root)
        requirements = [
            *pins(("mlflow", "mlflow-skinny"), "scikit-learn", "skops", *BASE_REQUIREMENTS[1:]),
            *trust.library_pins(types),
        ]
        code = None
        if self.root is not None:
            requirements += trust.requirement_pins(self.root)
            code = trust.code_paths(self.root, types) or None
        return mlflow.sklearn.log_model(
            self.estimator,
            name=name,
            serialization_format="skops",
            skops_trusted_types=types,
            signature=infer_signature(input_example, self.estimator.predict(input_example)),
            input_example=input_example,
            code_paths=code,
            pip_requirements=sorted(set(requirements)),
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
