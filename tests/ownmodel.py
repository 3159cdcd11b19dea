"""A small project of a team's own, written here (not copied from anywhere): taxi trips.

Raw columns as a real project has them: a string categorical (``city``), a datetime
(``pickup``, read with ``data.parse-dates``), numbers. The target (``tipped``) depends on all of
them, so a model that ignores the city or the hour scores worse. The project brings its own
preprocessing (``fare/features.py``), its own model code, its own pytest tests, and either a
``model.factory`` or a ``train.entrypoint`` training its own torch module.
"""

from __future__ import annotations

import csv
import io

import numpy as np

CITIES = ("lisbon", "porto", "faro")

FEATURES = '''"""Preprocessing of the fare project: raw trips -> numbers (training rows only)."""

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler


class PickupClock(BaseEstimator, TransformerMixin):
    """Hour of day as a point on a circle (23:00 is next to 00:00), plus weekend."""

    def fit(self, X, y=None):
        self.n_fit_rows_ = len(X)  # how many rows the transformer saw: training rows only
        return self

    def transform(self, X):
        when = pd.to_datetime(pd.DataFrame(X).iloc[:, 0])
        angle = 2 * np.pi * (when.dt.hour + when.dt.minute / 60) / 24
        return np.column_stack([np.sin(angle), np.cos(angle), when.dt.day_of_week >= 5])


def preprocessor():
    return ColumnTransformer(
        [
            ("city", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["city"]),
            ("clock", PickupClock(), ["pickup"]),
            ("numbers", StandardScaler(), ["distance_km", "passengers"]),
        ]
    )
'''

MODEL = '''"""The fare project's model: its own pipeline (taskyard fits it)."""

from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline

from fare.features import preprocessor


def build():
    return Pipeline(
        [("pre", preprocessor()), ("model", RandomForestClassifier(random_state=0))]
    )
'''

TORCH = '''"""The fare project's torch model, trained by taskyard's loop (ctx.fit_torch)."""

import mlflow
import torch
from torch import nn

from fare.features import preprocessor


class FareNet(nn.Module):
    def __init__(self, n_in, n_classes, hidden=32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x):
        return self.body(x)


def train(ctx):
    pre = preprocessor().fit(ctx.x_train)
    x = pre.transform(ctx.x_train)
    net = FareNet(x.shape[1], ctx.y_train.nunique(), hidden=int(ctx.params.get("hidden", 32)))
    ctx.fit_torch(net, x, epochs=int(ctx.params.get("epochs", 60)), lr=0.01)
    mlflow.log_param("fare.net", "FareNet")  # the active run is taskyard's train run
    return ctx.torch_model(net, preprocess=pre)
'''

TESTS = """import pandas as pd

from fare.features import PickupClock, preprocessor


def test_clock_wraps_midnight():
    x = pd.DataFrame({"pickup": pd.to_datetime(["2024-01-01 23:59", "2024-01-02 00:01"])})
    a, b = PickupClock().fit(x).transform(x)
    assert abs(a[0] - b[0]) < 0.01 and abs(a[1] - b[1]) < 0.01


def test_preprocessor_makes_numbers():
    x = pd.DataFrame(
        {"distance_km": [1.0, 5.0], "passengers": [1, 3], "city": ["porto", "faro"],
         "pickup": pd.to_datetime(["2024-01-01 08:00", "2024-01-06 20:00"])}
    )
    assert preprocessor().fit_transform(x).shape == (2, 7)  # 2 cities + 3 clock + 2 numbers
"""

CONFIG = """[project]
name = "{name}"

[data]
source = "csv:data/trips.csv"
target = "tipped"
parse-dates = ["pickup"]
seed = 7

[model]
task = "classification"
{model}

[metric]
name = "accuracy"

[evaluate]
min-score = 0.6
"""

FACTORY = 'factory = "python:fare.model:build"\n\n[model.params]\nmodel__n_estimators = 60'
ENTRYPOINT = (
    '\n[model.params]\nepochs = 60\n\n[train]\nentrypoint = "python:fare.torch_model:train"'
)


def trips(rows: int = 400, seed: int = 0) -> str:
    """CSV text: tips are likelier on long trips, in Lisbon, and late in the evening."""
    rng = np.random.default_rng(seed)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["distance_km", "passengers", "city", "pickup", "tipped"])
    start = np.datetime64("2024-03-01T00:00")
    for _ in range(rows):
        distance = round(float(rng.gamma(2.0, 3.0)), 2)
        passengers = int(rng.integers(1, 5))
        city = CITIES[int(rng.integers(0, 3))]
        pickup = start + np.timedelta64(int(rng.integers(0, 60 * 24 * 28)), "m")
        hour = pickup.astype("datetime64[h]").astype(int) % 24
        logit = 0.35 * distance - 2.2 + 1.6 * (city == "lisbon") + 1.8 * (hour >= 19)
        tipped = int(rng.random() < 1 / (1 + np.exp(-logit)))
        w.writerow([distance, passengers, city, str(pickup).replace("T", " "), tipped])
    return out.getvalue()


def files(kind: str = "factory", name: str = "fare-model") -> dict[str, str]:
    """The project's files, for ``gitutil.Remote.create`` or a workspace."""
    model = FACTORY if kind == "factory" else ENTRYPOINT
    return {
        "taskyard.toml": CONFIG.format(name=name, model=model),
        "data/trips.csv": trips(),
        "fare/__init__.py": "",
        "fare/features.py": FEATURES,
        "fare/model.py": MODEL,
        "fare/torch_model.py": TORCH,
        "tests/test_features.py": TESTS,
        "pyproject.toml": '[tool.pytest.ini_options]\npythonpath = ["."]\n',
    }


RAW_ROW = {
    "distance_km": 12.5,
    "passengers": 2,
    "city": "lisbon",
    "pickup": "2024-03-15T21:30:00",
}
