"""The selection metrics, each with its direction, so every comparison is direction-aware.

Computed with ``sklearn.metrics`` on a model's pyfunc predictions (``mlflow.evaluate`` is
deprecated, and one function here keeps train's and evaluate's numbers identical).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Scores closer than this are a tie: float noise must not churn the champion.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Metric:
    name: str
    task: str
    greater_is_better: bool
    needs_proba: bool = False

    def improvement(self, candidate: float, champion: float) -> float:
        """How much better the candidate is (positive: better, whatever the direction)."""
        return candidate - champion if self.greater_is_better else champion - candidate

    def meets(self, score: float, threshold: float) -> bool:
        """``score`` is at least as good as ``threshold`` (>= or <= by direction)."""
        return self.improvement(score, threshold) >= -TOLERANCE

    @property
    def comparator(self) -> str:
        return ">=" if self.greater_is_better else "<="


METRICS = {
    m.name: m
    for m in (
        Metric("accuracy", "classification", True),
        Metric("f1_macro", "classification", True),
        Metric("roc_auc", "classification", True, needs_proba=True),
        Metric("rmse", "regression", False),
        Metric("mae", "regression", False),
        Metric("r2", "regression", True),
    )
}


def default_metric(task: str) -> str:
    return "f1_macro" if task == "classification" else "rmse"


def label_metrics(task: str) -> list[str]:
    """The metrics computable from predictions alone (logged for every run)."""
    return [m.name for m in METRICS.values() if m.task == task and not m.needs_proba]


def score(name: str, y_true: Any, y_pred: Any = None, proba: Any = None, classes: Any = None):
    """Compute metric ``name``; ``proba`` (columns ordered as ``classes``) for roc_auc."""
    from sklearn import metrics as m

    if name == "accuracy":
        return float(m.accuracy_score(y_true, y_pred))
    if name == "f1_macro":
        return float(m.f1_score(y_true, y_pred, average="macro"))
    if name == "roc_auc":
        if proba.ndim == 2 and proba.shape[1] == 2:  # binary: the greater class is positive
            return float(m.roc_auc_score(y_true, proba[:, 1]))
        return float(m.roc_auc_score(y_true, proba, multi_class="ovr", labels=classes))
    if name == "rmse":
        return float(m.root_mean_squared_error(y_true, y_pred))
    if name == "mae":
        return float(m.mean_absolute_error(y_true, y_pred))
    if name == "r2":
        return float(m.r2_score(y_true, y_pred))
    raise KeyError(name)


def _probabilities(model: Any, x: Any) -> tuple[Any, Any]:
    """Class probabilities and their class order from a loaded pyfunc model, if it has them."""
    import numpy as np

    raw = None
    try:
        raw = model.get_raw_model()  # the sklearn and xgboost flavors
    except Exception:
        try:
            raw = model.unwrap_python_model()  # taskyard's torch model
        except Exception:
            raw = None
    if raw is None or not hasattr(raw, "predict_proba") or not hasattr(raw, "classes_"):
        raise ValueError("the model exposes no predict_proba, which roc_auc needs")
    return np.asarray(raw.predict_proba(x)), np.asarray(raw.classes_)


def evaluate(model: Any, name: str, x: Any, y: Any) -> float:
    """Score a loaded pyfunc model on ``(x, y)`` with metric ``name``."""
    import numpy as np

    if METRICS[name].needs_proba:
        proba, classes = _probabilities(model, x)
        return score(name, y, proba=proba, classes=classes)
    pred = model.predict(x)
    pred = np.asarray(pred.iloc[:, 0] if hasattr(pred, "iloc") and pred.ndim == 2 else pred)
    return score(name, np.asarray(y), np.ravel(pred))
