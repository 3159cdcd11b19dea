"""Data drift of a current batch against a reference profile (:mod:`taskyard.ml.profile`).

Per feature: numeric → two-sample Kolmogorov-Smirnov (``scipy.stats.ks_2samp``) of the
reference sample against the current values; categorical → chi-square goodness of fit
(``scipy.stats.chisquare``) of the current counts against the reference frequencies (values
never seen in training count as ``__other__``). Both also get the population stability index
(PSI) on the reference's bins / categories.

**Drifted = significant AND large.** A feature drifted when its p-value, corrected for the
number of features compared (Bonferroni, or Holm's step-down), is below ``alpha`` AND its PSI
is at least ``min_psi``. With large batches a p-value alone flags shifts too small to matter
(10k rows make a 0.05 sd move "significant"); with small ones PSI alone is noise (its expected
value under no drift grows like bins / n). The batch's **score** is the share of compared
features that drifted; it **drifted** when the score is above ``max_share`` (default 0: any
drifted feature).

Why scipy and not a drift library: evidently resolves ~79 packages, alibi-detect pins
``numpy<2`` (taskyard runs numpy 2), nannyml requires Python < 3.13; the two tests and PSI are
a few vectorised lines over scipy, which scikit-learn already brings. The model server computes
the same :func:`compare` on its window of inputs, so an alert and ``detect-drift`` agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from taskyard.ml.profile import CATEGORICAL, OTHER

EPS = 1e-4  # the floor of a bin's share in PSI and chi-square (an empty bin is not infinite)
CORRECTIONS = ("bonferroni", "holm")
MIN_ROWS = 30


@dataclass(frozen=True)
class FeatureDrift:
    kind: str  # numeric | categorical
    test: str  # ks | chi2
    statistic: float
    p_value: float
    p_adjusted: float
    psi: float
    drifted: bool
    n_current: int


@dataclass(frozen=True)
class DriftReport:
    features: dict[str, FeatureDrift]
    score: float
    drifted: bool
    alpha: float
    min_psi: float
    max_share: float
    correction: str
    rows: int
    missing_features: list[str] = field(default_factory=list)

    @property
    def drifted_features(self) -> list[str]:
        """Drifted features, the largest PSI first."""
        found = [(f.psi, name) for name, f in self.features.items() if f.drifted]
        return [name for _, name in sorted(found, reverse=True)]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_features"] = self.drifted_features
        return out


def _psi(ref: Any, cur: Any) -> float:
    import numpy as np

    r = np.maximum(np.asarray(ref, dtype=float), EPS)
    c = np.maximum(np.asarray(cur, dtype=float), EPS)
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def _values(current: Any, name: str) -> Any | None:
    """The current values of a feature as a 1-D numpy array, or None when it is not there."""
    import numpy as np

    if hasattr(current, "columns"):  # a DataFrame
        return current[name].to_numpy() if name in current.columns else None
    if name not in current:
        return None
    return np.asarray(current[name], dtype=object if _has_strings(current[name]) else None)


def _has_strings(values: Any) -> bool:
    return any(isinstance(v, str) for v in list(values)[:1000])


def _numeric(col: Mapping[str, Any], values: Any) -> tuple[float, float, float, int] | None:
    import numpy as np
    from scipy import stats

    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError):  # strings where training saw numbers: everything moved
        return 0.0, 1.0, 0.0, -1
    x = x[~np.isnan(x)]
    sample = np.asarray(col.get("sample") or [], dtype=float)
    if x.size == 0 or sample.size == 0:
        return None
    edges = np.asarray(col["edges"], dtype=float)
    counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
    psi = _psi(col["proportions"], counts / x.size)
    result = stats.ks_2samp(sample, x)
    return float(result.statistic), float(result.pvalue), psi, int(x.size)


def _categorical(col: Mapping[str, Any], values: Any) -> tuple[float, float, float, int] | None:
    import numpy as np
    from scipy import stats

    freq: dict[str, float] = dict(col["frequencies"])
    freq.setdefault(OTHER, 0.0)
    names = list(freq)
    index = {name: i for i, name in enumerate(names)}
    other = index[OTHER]
    seen = [
        str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    if not seen:
        return None
    counts = np.zeros(len(names))
    for v in seen:
        counts[index.get(v, other)] += 1
    ref = np.maximum(np.array([freq[n] for n in names]), EPS)
    ref = ref / ref.sum()
    if len(names) < 2:
        return 0.0, 1.0, 0.0, len(seen)
    result = stats.chisquare(counts, ref * counts.sum())
    return (
        float(result.statistic),
        float(result.pvalue),
        _psi(ref, counts / counts.sum()),
        len(seen),
    )


def _adjust(p_values: list[float], correction: str) -> list[float]:
    """Family-wise corrected p-values (Bonferroni, or Holm's step-down: uniformly more power)."""
    m = len(p_values)
    if correction == "bonferroni":
        return [min(1.0, p * m) for p in p_values]
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def compare(
    reference: Mapping[str, Any],
    current: Any,
    *,
    alpha: float = 0.05,
    min_psi: float = 0.1,
    max_share: float = 0.0,
    correction: str = "bonferroni",
    min_rows: int = MIN_ROWS,
) -> DriftReport:
    """The drift of ``current`` (a DataFrame, or feature -> values) against ``reference``.

    Raises ValueError for a batch with fewer than ``min_rows`` values in every feature, and for
    bad settings.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if min_psi < 0 or not 0 <= max_share < 1:
        raise ValueError("min-psi must be >= 0 and max-share in [0, 1)")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}")
    columns = reference["columns"]
    raw: dict[str, tuple[str, str, tuple[float, float, float, int]]] = {}
    missing: list[str] = []
    for name in reference["features"]:
        values = _values(current, name)
        col = columns[name]
        measure = _categorical if col["kind"] == CATEGORICAL else _numeric
        got = None if values is None else measure(col, values)
        if got is None:
            missing.append(name)
            continue
        kind, test = ("categorical", "chi2") if col["kind"] == CATEGORICAL else ("numeric", "ks")
        raw[name] = (kind, test, got)
    rows = max((abs(g[3]) for _, _, g in raw.values()), default=0)
    if rows < min_rows:
        raise ValueError(f"the current batch has {rows} rows; drift needs at least {min_rows}")
    names = list(raw)
    adjusted = _adjust([raw[n][2][1] for n in names], correction)
    features: dict[str, FeatureDrift] = {}
    for name, p_adj in zip(names, adjusted, strict=True):
        kind, test, (stat, p, psi, n) = raw[name]
        if n < 0:  # a type change (text in a numeric feature): drifted by definition
            features[name] = FeatureDrift(kind, test, 1.0, 0.0, 0.0, math.inf, True, 0)
            continue
        drifted = p_adj < alpha and psi >= min_psi
        features[name] = FeatureDrift(kind, test, stat, p, p_adj, psi, drifted, n)
    score = sum(f.drifted for f in features.values()) / len(features) if features else 0.0
    return DriftReport(
        features=features,
        score=score,
        drifted=score > max_share,
        alpha=alpha,
        min_psi=min_psi,
        max_share=max_share,
        correction=correction,
        rows=rows,
        missing_features=missing,
    )
