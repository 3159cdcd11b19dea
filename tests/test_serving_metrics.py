"""The server's metrics in-process: labels from the model URI, the caps that bound cardinality,
and a failing observation that must not fail the prediction."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from taskyard.serving.__main__ import parser
from taskyard.serving.metrics import ObservedModel, ServerMetrics, model_labels


def samples(metrics: ServerMetrics) -> dict[str, list[Any]]:
    text = generate_latest(metrics.registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


@pytest.mark.parametrize(
    ("uri", "labels"),
    [
        ("models:/fraud/7", ("fraud", "7")),
        ("models:/fraud@champion", ("fraud", "")),
        ("runs:/0a1b2c/model", ("model", "")),
        ("/srv/models/fraud/", ("fraud", "")),
    ],
)
def test_model_and_version_labels(uri: str, labels: tuple[str, str]) -> None:
    assert model_labels(uri) == labels


def test_classes_and_features_are_capped() -> None:
    metrics = ServerMetrics("models:/m/1", max_classes=3, max_features=2)
    metrics.observe_predictions(np.array(["a", "b", "c", "d", "e", "a"]))
    metrics.observe_predictions([True, "f"])
    classes = {
        s.labels["class"]: s.value
        for s in samples(metrics)["taskyard_model_predicted_class"]
        if s.name.endswith("_total")
    }
    assert classes == {"a": 2, "b": 1, "c": 1, "other": 4}

    metrics.observe_inputs(pd.DataFrame({"x": [1.0, None], "y": [2, 3], "z": [4, 5]}))
    metrics.observe_inputs(pd.DataFrame({"w": [1], "y": [1]}))
    got = samples(metrics)
    counts = {
        s.labels["feature"]: s.value
        for s in got["taskyard_model_feature_value"]
        if s.name.endswith("_count")
    }
    assert counts == {"x": 1, "y": 3}  # z and w: over the cap of 2 features
    missing = {s.labels["feature"]: s.value for s in got["taskyard_model_feature_missing"]}
    assert missing == {"x": 1, "y": 0}


def test_a_failing_observation_counts_an_error_and_the_prediction_still_answers() -> None:
    class Unobservable:
        def to_numpy(self) -> Any:
            raise RuntimeError("no numpy view")

    class Model:
        metadata = "meta"

        def predict(self, data: Any, params: Any = None) -> Any:
            return Unobservable()

    metrics = ServerMetrics("models:/m/1")
    observed = ObservedModel(Model(), metrics)
    assert observed.metadata == "meta"
    assert isinstance(observed.predict(Unobservable()), Unobservable)
    errors = {
        s.labels["stage"]: s.value
        for s in samples(metrics)["taskyard_model_metrics_errors"]
        if s.name.endswith("_total")
    }
    assert errors == {"inputs": 1, "predictions": 1}


def test_cli_defaults_match_the_container_contract() -> None:
    args = parser().parse_args(["--model-uri", "models:/m/1"])
    assert (args.host, args.port) == ("127.0.0.1", 8080)
    args = parser().parse_args(["--model-uri", "models:/m/1", "--prediction-buckets", "1,0.5"])
    assert args.prediction_buckets == (0.5, 1.0)
    with pytest.raises(SystemExit):
        parser().parse_args(["--model-uri", "x", "--prediction-buckets", "a,b"])
