"""The server's drift gauges: the last N input rows against the model's training reference.

The reference is the profile ``train`` logged with the model's run (``reference_profile.json``,
:mod:`taskyard.ml.profile`); the statistic is the one ``detect-drift`` computes
(:func:`taskyard.ml.drift.compare`), so an alert and the pipeline it starts agree on what
"drifted" means. Gauges (labels ``model``, ``version``; per feature also ``feature``):

- ``taskyard_model_drift_window_rows``: rows in the window (always exported);
- ``taskyard_model_drift_score``: share of compared features drifted (0..1);
- ``taskyard_model_drift_threshold``: the share above which the server calls it drift;
- ``taskyard_model_drifted``: 1 when score > threshold;
- ``taskyard_model_feature_drift{feature}``: PSI of the feature over the window.

The last four appear only once the window holds ``min_rows`` rows: a score from a handful of
requests would be noise, and an absent series does not fire an alert. The statistics are
computed at scrape time, at most once per change of the window (a scrape of an idle server
costs nothing), and never fail a scrape (``taskyard_model_metrics_errors_total{stage="drift"}``).

The window is row-aligned (each request's batch is kept whole, oldest batches dropped first),
so ``GET /monitoring/window`` returns a batch ``detect-drift --current URL`` can compare.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "taskyard_model"
DEFAULT_WINDOW = 1000
DEFAULT_MIN_ROWS = 200


class DriftWindow(Collector):
    """A rolling window of input rows and the drift gauges computed over it."""

    def __init__(
        self,
        labels: tuple[str, str],
        registry: CollectorRegistry,
        *,
        window: int = DEFAULT_WINDOW,
        min_rows: int = DEFAULT_MIN_ROWS,
        alpha: float = 0.05,
        min_psi: float = 0.1,
        max_share: float = 0.0,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.labels = labels
        self.window, self.min_rows = window, min(min_rows, window)
        self.alpha, self.min_psi, self.max_share = alpha, min_psi, max_share
        self.on_error = on_error
        self.reference: dict[str, Any] | None = None
        self.features: list[str] = []
        self.batches: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        self.rows = 0
        self.changes = 0  # bumped on every new batch: the cache key of the last computation
        self._computed: tuple[int, Any] | None = None
        self.lock = threading.Lock()
        registry.register(self)

    def set_reference(self, profile: dict[str, Any]) -> None:
        with self.lock:
            self.reference = profile
            self.features = [str(f) for f in profile.get("features", [])]
            self.batches.clear()
            self.rows, self._computed = 0, None

    @property
    def enabled(self) -> bool:
        return self.reference is not None

    def observe_columns(self, columns: dict[str, Any]) -> None:
        """One request's columns (name -> 1-D numpy array); only the reference's features."""
        if self.reference is None:
            return
        kept = {f: columns[f] for f in self.features if f in columns}
        if not kept:
            return
        n = min(len(v) for v in kept.values())
        if n == 0:
            return
        if n > self.window:
            kept, n = {f: v[-self.window :] for f, v in kept.items()}, self.window
        else:
            kept = {f: v[:n] for f, v in kept.items()}
        with self.lock:
            self.batches.append((n, kept))
            self.rows += n
            while self.batches and self.rows - self.batches[0][0] >= self.window:
                self.rows -= self.batches.popleft()[0]
            self.changes += 1

    def snapshot(self) -> dict[str, Any]:
        """The window as a batch: ``{"rows", "columns": {feature: [values]}}`` (NaN -> null)."""
        import numpy as np

        with self.lock:
            batches = list(self.batches)
        columns: dict[str, list[Any]] = {}
        for f in self.features:
            parts = [cols[f] for _, cols in batches if f in cols]
            if not parts:
                continue
            values = np.concatenate(parts)[-self.window :]
            columns[f] = [_plain(v) for v in values.tolist()]
        rows = max((len(v) for v in columns.values()), default=0)
        model, version = self.labels
        return {"model": model, "version": version, "rows": rows, "columns": columns}

    def report(self) -> Any:
        """The drift report of the current window (cached per change); None below min_rows."""
        from taskyard.ml import drift

        with self.lock:
            if self.reference is None or self.rows < self.min_rows:
                return None
            if self._computed is not None and self._computed[0] == self.changes:
                return self._computed[1]
            changes, reference = self.changes, self.reference
        current = self.snapshot()["columns"]
        result = drift.compare(
            reference, current, alpha=self.alpha, min_psi=self.min_psi, max_share=self.max_share
        )
        with self.lock:
            self._computed = (changes, result)
        return result

    def _families(self) -> dict[str, GaugeMetricFamily]:
        base, feat = ["model", "version"], ["model", "version", "feature"]
        return {
            "rows": GaugeMetricFamily(
                f"{PREFIX}_drift_window_rows", "Input rows in the drift window", labels=base
            ),
            "score": GaugeMetricFamily(
                f"{PREFIX}_drift_score",
                "Share of input features drifted over the window vs the training reference",
                labels=base,
            ),
            "threshold": GaugeMetricFamily(
                f"{PREFIX}_drift_threshold",
                "Drift score above which the server calls the input drifted",
                labels=base,
            ),
            "drifted": GaugeMetricFamily(
                f"{PREFIX}_drifted", "1 when the drift score is above the threshold", labels=base
            ),
            "psi": GaugeMetricFamily(
                f"{PREFIX}_feature_drift",
                "Population stability index of the feature over the window",
                labels=feat,
            ),
        }

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.reference is None:
            return
        fams = self._families()
        labels = list(self.labels)
        fams["rows"].add_metric(labels, float(min(self.rows, self.window)))
        try:
            result = self.report()
        except Exception:
            self.on_error()
            result = None
        if result is not None:
            fams["score"].add_metric(labels, float(result.score))
            fams["threshold"].add_metric(labels, float(self.max_share))
            fams["drifted"].add_metric(labels, 1.0 if result.drifted else 0.0)
            for name, f in result.features.items():
                if f.psi is not None and math.isfinite(f.psi):
                    fams["psi"].add_metric([*labels, name], float(f.psi))
        yield from fams.values()


def _plain(value: Any) -> Any:
    """JSON-safe: NaN -> None; numpy scalars were made Python values by ``tolist``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
