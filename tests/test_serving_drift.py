"""The model server's drift window in-process: row-aligned window, gauges only past min_rows,
the same verdict as detect-drift's statistic, and the window as a batch for detect-drift."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from taskyard.ml import drift, profile
from taskyard.serving.metrics import ServerMetrics

FEATURES = ["a", "b", "c"]


def reference(seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f: rng.normal(size=5000) for f in FEATURES})
    frame["kind"] = rng.choice(["x", "y", "z"], size=5000)
    return profile.build(frame)


def batch(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f: rng.normal(size=rows) for f in FEATURES})
    frame["a"] += shift
    frame["kind"] = rng.choice(["x", "y", "z"], size=rows)
    return frame


def gauges(metrics: ServerMetrics) -> dict[str, list[Any]]:
    text = generate_latest(metrics.registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(metrics: ServerMetrics, name: str) -> float | None:
    found = gauges(metrics).get(name, [])
    return found[0].value if found else None


def test_no_reference_no_drift_gauges_and_no_window() -> None:
    metrics = ServerMetrics("models:/m/1")
    metrics.observe_inputs(batch(500, 1))
    got = gauges(metrics)
    assert not any(name.startswith("taskyard_model_drift") for name in got)
    assert not metrics.drift.enabled


def test_gauges_appear_past_min_rows_and_follow_the_window() -> None:
    metrics = ServerMetrics("models:/m/3", drift={"window": 1000, "min_rows": 200})
    metrics.drift.set_reference(reference())
    metrics.observe_inputs(batch(150, 1))
    assert value(metrics, "taskyard_model_drift_window_rows") == 150
    assert value(metrics, "taskyard_model_drift_score") is None  # too few rows: no verdict

    for i in range(10):  # in distribution, 1000 rows
        metrics.observe_inputs(batch(100, 10 + i))
    assert value(metrics, "taskyard_model_drift_window_rows") == 1000
    assert value(metrics, "taskyard_model_drift_score") == 0.0
    assert value(metrics, "taskyard_model_drifted") == 0.0
    assert value(metrics, "taskyard_model_drift_threshold") == 0.0
    psi = {s.labels["feature"]: s.value for s in gauges(metrics)["taskyard_model_feature_drift"]}
    assert set(psi) == {*FEATURES, "kind"} and max(psi.values()) < 0.1
    assert all(s.labels["version"] == "3" for s in gauges(metrics)["taskyard_model_drift_score"])

    for i in range(10):  # `a` moved by one sd: the whole window is shifted traffic now
        metrics.observe_inputs(batch(100, 100 + i, shift=1.0))
    assert value(metrics, "taskyard_model_drifted") == 1.0
    assert value(metrics, "taskyard_model_drift_score") == 0.25  # 1 feature of 4
    psi = {s.labels["feature"]: s.value for s in gauges(metrics)["taskyard_model_feature_drift"]}
    assert psi["a"] > 0.25 and max(psi["b"], psi["c"], psi["kind"]) < 0.1


def test_the_server_and_detect_drift_agree_on_the_window() -> None:
    metrics = ServerMetrics("models:/m/1", drift={"window": 600, "min_rows": 100})
    ref = reference()
    metrics.drift.set_reference(ref)
    for i in range(4):
        metrics.observe_inputs(batch(250, i, shift=0.5 if i >= 2 else 0.0))
    window = metrics.drift.snapshot()
    # Row-aligned and cut to the window: the last 600 rows, every feature the same length.
    assert window["rows"] == 600 and {len(v) for v in window["columns"].values()} == {600}
    expected = pd.concat([batch(250, i, 0.5 if i >= 2 else 0.0) for i in range(4)]).tail(600)
    assert window["columns"]["a"] == expected["a"].tolist()
    same = drift.compare(ref, window["columns"])
    served = metrics.drift.report()
    assert served.score == same.score and served.drifted == same.drifted


def test_unknown_columns_and_missing_values() -> None:
    metrics = ServerMetrics("models:/m/1", drift={"window": 300, "min_rows": 50})
    metrics.drift.set_reference(reference())
    frame = batch(300, 5)
    frame["extra"] = 1.0
    frame.loc[:9, "b"] = np.nan
    metrics.observe_inputs(frame)
    window = metrics.drift.snapshot()
    assert "extra" not in window["columns"]
    assert window["columns"]["b"][:10] == [None] * 10  # NaN travels as JSON null
    assert value(metrics, "taskyard_model_drifted") == 0.0
