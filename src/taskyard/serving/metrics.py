"""The model server's Prometheus metrics: requests, latency, predictions, input features.

Everything lives in one dedicated :class:`~prometheus_client.CollectorRegistry` (never the
process-global one) and is exposed by prometheus_client's own ASGI app at ``/metrics``. Every
metric carries ``model`` and ``version`` labels (from ``models:/NAME/VERSION``, see
:func:`model_labels`):

- ``taskyard_model_requests_total{path,status}``: scoring requests answered, by HTTP status
  (413 and 400 from the input limits included; ``/metrics``, ``/health``, ``/live`` excluded);
- ``taskyard_model_request_duration_seconds{path}``: their latency (histogram);
- ``taskyard_model_prediction``: float predictions (histogram, ``--prediction-buckets``;
  ``_sum``/``_count`` only when no bound is negative);
- ``taskyard_model_predicted_class_total{class}``: int, string and bool predictions, at most
  ``max_classes`` distinct values, the rest as ``class="other"``;
- ``taskyard_model_feature_value{feature}`` (summary: ``_count``, ``_sum``) and
  ``taskyard_model_feature_value_squares_total{feature}``: per numeric input column, so
  ``mean = rate(_sum) / rate(_count)`` and ``variance = rate(squares) / rate(_count) - mean²``;
- ``taskyard_model_feature_missing_total{feature}``: missing (null/NaN) values per column;
  at most ``max_features`` columns are tracked (the first ones seen). Inputs are observed as
  the model receives them (parsed by MLflow), before it predicts, so a batch whose NaNs make
  the model fail still counts its missing values;
- ``taskyard_model_ready``: 1 once the model is loaded;
- the drift gauges over a rolling window of inputs (:mod:`taskyard.serving.drift`);
- ``taskyard_model_metrics_errors_total{stage}``: observations that failed (a metrics failure
  never fails a prediction).

Predictions and inputs are summed with numpy per request (a custom collector each), not one
Python call per value, so a 10k-row batch costs a few vectorized passes.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

PREFIX = "taskyard_model"
DEFAULT_MAX_CLASSES = 50
DEFAULT_MAX_FEATURES = 100
OTHER_CLASS = "other"
MAX_LABEL_CHARS = 100
# Probabilities and scores (0..1) in detail, then a log-ish scale for regressions. None is
# negative: with a negative bound the exposition leaves out _sum and _count (OpenMetrics, and
# prometheus_client's HistogramMetricFamily), and the mean prediction is worth more than the
# detail below 0 (values < 0 fall in le="0.0"). A model predicting negatives may pass its own.
DEFAULT_PREDICTION_BUCKETS: tuple[float, ...] = (
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
    2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1e3, 1e4,
)  # fmt: skip
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Request paths counted by name; anything else the scoring app answers (404s) is "other".
SCORING_PATHS = frozenset({"/invocations", "/ping", "/version"})


def model_labels(model_uri: str) -> tuple[str, str]:
    """``models:/NAME/VERSION`` → (NAME, VERSION); ``models:/NAME@ALIAS`` → (NAME, "");
    any other URI → (its last path part, "")."""
    if model_uri.startswith("models:/"):
        rest = model_uri.removeprefix("models:/").strip("/")
        name, _, version = rest.partition("/")
        if "@" in name and not version:
            return name.split("@", 1)[0], ""
        if version and "/" not in version:
            return name, version
    last = model_uri.rstrip("/").rsplit("/", 1)[-1]
    return last or model_uri, ""


def _label(value: object) -> str:
    return str(value)[:MAX_LABEL_CHARS]


class PredictionObserver(Collector):
    """Float predictions into a histogram, class-like ones into a capped counter."""

    def __init__(
        self,
        labels: tuple[str, str],
        registry: CollectorRegistry,
        buckets: Sequence[float] = DEFAULT_PREDICTION_BUCKETS,
        max_classes: int = DEFAULT_MAX_CLASSES,
    ) -> None:
        import numpy as np

        self._np = np
        self.labels = labels
        self.bounds = np.array(sorted(float(b) for b in buckets if math.isfinite(b)))
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # the last one is +Inf
        self.total = 0.0
        self.max_classes = max_classes
        self.classes = Counter(
            f"{PREFIX}_predicted_class",
            "Class-like predictions (ints, strings, bools), distinct values capped",
            ["model", "version", "class"],
            registry=registry,
        )
        self.known: set[str] = set()
        self.lock = threading.Lock()
        registry.register(self)

    def observe(self, predictions: Any) -> None:
        np = self._np
        values = _as_array(predictions)
        if values is None or values.size == 0:
            return
        if values.dtype.kind == "O":  # lists of Python objects: floats if every one is a float
            flat = values.ravel()
            if all(isinstance(v, float) for v in flat):
                values = flat.astype(float)
        if values.dtype.kind == "f":
            flat = values.ravel()
            flat = flat[np.isfinite(flat)]
            idx = np.searchsorted(self.bounds, flat, side="left")  # first bound >= value: le
            add = np.bincount(idx, minlength=len(self.counts))
            with self.lock:
                self.counts += add
                self.total += float(flat.sum())
            return
        if values.dtype.kind == "c":
            return
        uniques, counts = np.unique(values.ravel().astype(str), return_counts=True)
        with self.lock:
            for value, n in zip(uniques.tolist(), counts.tolist(), strict=True):
                name = _label(value)
                if name not in self.known and len(self.known) >= self.max_classes:
                    name = OTHER_CLASS
                else:
                    self.known.add(name)
                self.classes.labels(*self.labels, name).inc(n)

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(
            f"{PREFIX}_prediction", "Float predictions", labels=["model", "version"]
        )

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self.lock:
            counts, total = self.counts.cumsum().tolist(), self.total
        family = HistogramMetricFamily(
            f"{PREFIX}_prediction", "Float predictions", labels=["model", "version"]
        )
        edges = [_float_text(b) for b in self.bounds.tolist()] + ["+Inf"]
        family.add_metric(list(self.labels), list(zip(edges, counts, strict=True)), total)
        yield family


def _float_text(value: float) -> str:
    return repr(float(value))


def _as_array(data: Any) -> Any:
    """numpy view of a prediction or input (pandas objects, lists, scalars); None if not."""
    import numpy as np

    if isinstance(data, dict):
        return None  # named multi-output predictions: not summarized
    to_numpy = getattr(data, "to_numpy", None)
    if callable(to_numpy):
        return np.asarray(to_numpy())
    try:
        return np.asarray(data)
    except Exception:
        return None


class InputObserver(Collector):
    """Per input column: count, sum and sum of squares of numeric values; missing values.

    :meth:`columns` is the one place inputs are taken apart; the drift window
    (:class:`~taskyard.serving.drift.DriftWindow`) gets the same columns.
    """

    def __init__(
        self,
        labels: tuple[str, str],
        registry: CollectorRegistry,
        max_features: int = DEFAULT_MAX_FEATURES,
    ) -> None:
        import numpy as np

        self._np = np
        self.labels = labels
        self.max_features = max_features
        # feature -> [count, sum, sum of squares, missing]
        self.stats: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        registry.register(self)

    def observe(self, data: Any) -> None:
        self.observe_columns(dict(self.columns(data)))

    def columns(self, data: Any) -> Iterator[tuple[str, Any]]:
        """(feature name, 1-D numpy array) for a DataFrame, a 1/2-D array or a dict of arrays."""
        np = self._np
        if hasattr(data, "columns") and hasattr(data, "__getitem__"):  # a pandas DataFrame
            for name in list(data.columns)[: self.max_features * 2]:
                yield _label(name), np.asarray(data[name].to_numpy())
            return
        if isinstance(data, dict):
            for name, value in list(data.items())[: self.max_features * 2]:
                arr = _as_array(value)
                if arr is not None:
                    yield _label(name), arr.ravel()
            return
        arr = _as_array(data)
        if arr is None or arr.ndim == 0:
            return
        if arr.ndim == 1:
            yield "0", arr
            return
        flat = arr.reshape(arr.shape[0], -1)
        for i in range(min(flat.shape[1], self.max_features)):
            yield str(i), flat[:, i]

    def observe_columns(self, columns: dict[str, Any]) -> None:
        np = self._np
        updates = []
        for name, values in columns.items():
            if values.dtype.kind in "biuf":
                x = values.astype(float)
                missing = np.isnan(x)
                x = x[~missing]
                updates.append((name, x.size, x.sum(), np.square(x).sum(), int(missing.sum())))
            else:  # strings, objects, datetimes: only what is missing
                import pandas as pd

                updates.append((name, 0, 0.0, 0.0, int(pd.isna(values).sum())))
        with self.lock:
            for name, count, total, squares, missing in updates:
                stat = self.stats.get(name)
                if stat is None:
                    if len(self.stats) >= self.max_features:
                        continue
                    stat = self.stats[name] = [0, 0.0, 0.0, 0]
                stat[0] += count
                stat[1] += float(total)
                stat[2] += float(squares)
                stat[3] += missing

    def _families(self) -> tuple[SummaryMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        names = ["model", "version", "feature"]
        return (
            SummaryMetricFamily(
                f"{PREFIX}_feature_value", "Numeric input values per feature", labels=names
            ),
            CounterMetricFamily(
                f"{PREFIX}_feature_value_squares",
                "Sum of squared numeric input values per feature (variance = E[x²] - mean²)",
                labels=names,
            ),
            CounterMetricFamily(
                f"{PREFIX}_feature_missing", "Missing input values per feature", labels=names
            ),
        )

    def describe(self) -> Iterator[Any]:
        yield from self._families()

    def collect(self) -> Iterator[Any]:
        values, squares, missing = self._families()
        with self.lock:
            stats = {name: list(s) for name, s in self.stats.items()}
        for name, (count, total, sq, miss) in stats.items():
            labels = [*self.labels, name]
            values.add_metric(labels, count, total)
            squares.add_metric(labels, sq)
            missing.add_metric(labels, miss)
        yield values
        yield squares
        yield missing


class ServerMetrics:
    """All the server's metrics, in their own registry."""

    def __init__(
        self,
        model_uri: str,
        *,
        prediction_buckets: Sequence[float] = DEFAULT_PREDICTION_BUCKETS,
        max_classes: int = DEFAULT_MAX_CLASSES,
        max_features: int = DEFAULT_MAX_FEATURES,
        drift: dict[str, Any] | None = None,
    ) -> None:
        from taskyard.serving.drift import DriftWindow

        self.registry = CollectorRegistry(auto_describe=True)
        self.labels = model_labels(model_uri)
        base = ["model", "version"]
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Scoring requests answered, by path and HTTP status",
            [*base, "path", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Scoring request latency, by path",
            [*base, "path"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            f"{PREFIX}_metrics_errors",
            "Observations that failed (the prediction itself was answered)",
            [*base, "stage"],
            registry=self.registry,
        )
        self.ready = Gauge(
            f"{PREFIX}_ready", "1 once the model is loaded", base, registry=self.registry
        )
        self.ready.labels(*self.labels).set(0)
        self.predictions = PredictionObserver(
            self.labels, self.registry, prediction_buckets, max_classes
        )
        self.inputs = InputObserver(self.labels, self.registry, max_features)
        self.drift = DriftWindow(
            self.labels, self.registry, on_error=lambda: self.failed("drift"), **(drift or {})
        )

    def request(self, path: str, status: int, seconds: float) -> None:
        try:
            name = path if path in SCORING_PATHS else "other"
            self.requests.labels(*self.labels, name, str(status)).inc()
            self.latency.labels(*self.labels, name).observe(seconds)
        except Exception:
            self.failed("requests")

    def observe_inputs(self, data: Any) -> None:
        """The parsed input of one predict call (before the model sees it). Never raises."""
        try:
            columns = dict(self.inputs.columns(data))
            self.inputs.observe_columns(columns)
            self.drift.observe_columns(columns)
        except Exception:
            self.failed("inputs")

    def observe_predictions(self, predictions: Any) -> None:
        """What one successful predict call returned. Never raises."""
        try:
            self.predictions.observe(predictions)
        except Exception:
            self.failed("predictions")

    def failed(self, stage: str) -> None:
        with contextlib.suppress(Exception):
            self.errors.labels(*self.labels, stage).inc()


class ObservedModel:
    """A thin proxy of a pyfunc model for ``scoring_server.init``: ``predict`` also feeds the
    metrics. MLflow's scoring app uses ``model.metadata`` and ``model.predict(data,
    params=…)`` (it checks ``predict``'s signature for ``params``); the rest is delegated."""

    def __init__(self, model: Any, metrics: ServerMetrics) -> None:
        self._model = model
        self._metrics = metrics
        self.metadata = model.metadata

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        # Inputs before predicting: missing values count even when they make predict fail.
        self._metrics.observe_inputs(data)
        predictions = self._model.predict(data, params=params)
        self._metrics.observe_predictions(predictions)
        return predictions

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)
