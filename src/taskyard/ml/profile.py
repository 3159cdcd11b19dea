"""The reference profile of the training data: what drift is measured against.

Small enough to log with every training run (~20 KB per numeric feature) and complete enough
for both statistics :mod:`taskyard.ml.drift` computes: per numeric feature the decile bin edges
and their proportions (PSI) and a seeded sample of at most ``sample_size`` (2,000) values
(two-sample KS); per categorical feature the frequencies of its ``max_categories`` most common
values plus ``__other__`` (chi-square and PSI). Datetime columns are skipped (listed under
``skipped``).

The profile is logged as ``reference_profile.json`` in the training run; the model server and
``detect-drift`` find it from the model (its version's run).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from taskyard.errors import StepError

PROFILE_VERSION = 1
ARTIFACT = "reference_profile.json"
OTHER = "__other__"
NUMERIC, CATEGORICAL = "numeric", "categorical"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _numeric(values: Any, sample_size: int, seed: int, bins: int) -> dict[str, Any]:
    import numpy as np

    x = np.asarray(values, dtype=float)
    missing = int(np.isnan(x).sum())
    x = x[~np.isnan(x)]
    out: dict[str, Any] = {"kind": NUMERIC, "count": int(x.size), "missing": missing}
    if x.size == 0:
        return out | {"edges": [], "proportions": [], "sample": []}
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
    rng = np.random.default_rng(seed)
    sample = x if x.size <= sample_size else rng.choice(x, size=sample_size, replace=False)
    return out | {
        "mean": _finite(x.mean()),
        "std": _finite(x.std()),
        "min": _finite(x.min()),
        "max": _finite(x.max()),
        "edges": edges.tolist(),
        "proportions": (counts / x.size).tolist(),
        # 6 significant digits: a third of the JSON, and far finer than any drift.
        "sample": [float(f"{v:.6g}") for v in np.sort(sample).tolist()],
    }


def _categorical(values: Any, max_categories: int) -> dict[str, Any]:
    import pandas as pd

    s = pd.Series(values, copy=False)
    missing = int(s.isna().sum())
    s = s.dropna().astype(str)
    counts = s.value_counts()
    top = counts.head(max_categories)
    freq = {str(k): float(v) / len(s) for k, v in top.items()} if len(s) else {}
    rest = int(counts.iloc[max_categories:].sum()) if len(counts) > max_categories else 0
    if len(s):
        freq[OTHER] = rest / len(s)
    return {"kind": CATEGORICAL, "count": len(s), "missing": missing, "frequencies": freq}


def build(
    frame: Any,
    features: list[str] | None = None,
    *,
    sample_size: int = 2000,
    seed: int = 0,
    bins: int = 10,
    max_categories: int = 50,
) -> dict[str, Any]:
    """The profile of ``frame``'s ``features`` (default: every column)."""
    names = [str(c) for c in (features if features is not None else frame.columns)]
    out: dict[str, Any] = {"version": PROFILE_VERSION, "rows": len(frame), "features": []}
    per: dict[str, Any] = {}
    skipped: list[str] = []
    for name in names:
        col = frame[name]
        kind = col.dtype.kind
        if kind in "mM":
            skipped.append(name)
            continue
        if kind in "iuf":
            per[name] = _numeric(
                col.to_numpy(dtype=float, na_value=float("nan")), sample_size, seed, bins
            )
        else:  # strings, objects, categories, bools: by value
            per[name] = _categorical(col, max_categories)
        out["features"].append(name)
    out["columns"] = per
    out["skipped"] = skipped
    return out


def check(profile: Any, where: str = "reference profile") -> dict[str, Any]:
    """A profile as :func:`build` makes it, or a one-line :class:`StepError`."""
    if not isinstance(profile, dict) or profile.get("version") != PROFILE_VERSION:
        found = profile.get("version") if isinstance(profile, dict) else type(profile).__name__
        raise StepError(f"{where}: not a taskyard reference profile (version {found!r})")
    columns = profile.get("columns")
    if not isinstance(columns, dict) or not isinstance(profile.get("features"), list):
        raise StepError(f"{where}: has no features")
    for name in profile["features"]:
        col = columns.get(name)
        if not isinstance(col, dict) or col.get("kind") not in (NUMERIC, CATEGORICAL):
            raise StepError(f"{where}: feature {name!r} is malformed")
    return profile


def save(profile: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(profile, separators=(",", ":")) + "\n")
    return path


def load(source: Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return check(source)
    try:
        data = json.loads(Path(source).read_text())
    except (OSError, ValueError) as e:
        raise StepError(f"cannot read the reference profile {source}: {e}") from None
    return check(data, str(source))


def log(profile: dict[str, Any], mlflow: Any = None) -> None:
    """Into the active run of ``mlflow`` (default: the imported module), as :data:`ARTIFACT`."""
    if mlflow is None:
        import mlflow

    mlflow.log_dict(profile, ARTIFACT)


def run_of(model: str) -> str:
    """The training run of ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/ID/…``;
    anything else is taken for a run id."""
    if model.startswith("runs:/"):
        return model.removeprefix("runs:/").split("/", 1)[0]
    if not model.startswith("models:/"):
        return model
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    rest = model.removeprefix("models:/").strip("/")
    client = MlflowClient()
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = rest.partition("/")
            version = client.get_model_version(name, number)
    except MlflowException as e:
        raise StepError(f"{model}: {e.message.splitlines()[0]}") from None
    if not version.run_id:
        raise StepError(f"{model} names no training run")
    return version.run_id


def for_model(model: str) -> dict[str, Any]:
    """The profile logged with the training run of ``model`` (a model URI or a run id)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    run_id = run_of(model)
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ARTIFACT)
    except (MlflowException, OSError):
        raise StepError(
            f"model {model} was trained before taskyard logged reference profiles "
            f"(its run {run_id} has no {ARTIFACT}); retrain it"
        ) from None
    return load(Path(path))
