"""Real MLflow models for tests: a tiny sklearn classifier and a pyfunc whose predict raises.

Every model is logged with a signature, an input example and explicit ``pip_requirements``
(inferred requirements would pull in the whole venv). Call ``use_store`` first so the SQLite
store and its artifacts live under the test's own ``TASKYARD_HOME``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from taskyard.steps import _mlflow

EXPERIMENT = "taskyard-tests"
SKLEARN_REQS = ["mlflow", "scikit-learn", "pandas"]
FEATURES = ["x0", "x1", "x2"]


def use_store(monkeypatch: pytest.MonkeyPatch, home: Path) -> str:
    """Point taskyard and mlflow at a fresh SQLite store under ``home``; return the URI."""
    monkeypatch.setenv("TASKYARD_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    uri = _mlflow.setup()
    # setup() exports the URI into os.environ; let monkeypatch undo it after the test.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", os.environ["MLFLOW_TRACKING_URI"])
    return uri


_TEMPLATES: dict[Path, Path] = {}


def migrated_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: pytest.TempPathFactory
) -> str:
    """A fresh store per test, copied from a migrated empty one made once per process.

    Migrating a new MLflow SQLite database takes ~5-10 s here; the copy is the same real,
    fully migrated database, without a run or an experiment in it.
    """
    from mlflow import MlflowClient

    base = factory.getbasetemp()
    template = _TEMPLATES.get(base)
    if template is None:
        template = base / "mlflow-template" / "mlflow.db"
        template.parent.mkdir(exist_ok=True)
        uri = f"sqlite:///{template}"
        MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
        _TEMPLATES[base] = template
    home = tmp_path / "home"
    (home / "mlflow").mkdir(parents=True)
    shutil.copy(template, home / "mlflow" / "mlflow.db")
    return use_store(monkeypatch, home)


def _frame(rows: int = 40, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)
    y = (x["x0"] + 0.5 * x["x1"] > 0).astype(int)
    return x, y


def log_sklearn_model(seed: int = 0, params: dict | None = None) -> tuple[str, str]:
    """Train a small logistic regression, log it; return ``(runs:/ model URI, run id)``."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    x, y = _frame(seed=seed)
    model = LogisticRegression(max_iter=200).fit(x, y)
    mlflow.set_experiment(experiment_id=_mlflow.experiment(EXPERIMENT))
    with mlflow.start_run() as run:
        mlflow.log_params(params or {"seed": seed})
        mlflow.set_tag("mlflow.source.git.commit", f"c0ffee{seed:02d}")
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x, model.predict(x)),
            input_example=x.head(2),
            pip_requirements=SKLEARN_REQS,
        )
    return f"runs:/{run.info.run_id}/model", run.info.run_id


def log_broken_model() -> tuple[str, str]:
    """A pyfunc that loads and answers /ping but whose predict raises: a failing smoke test.

    It has a signature but no input example, so the smoke payload is synthesized from the schema.
    """
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    class Broken(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            raise RuntimeError("this model is broken on purpose")

    x, _ = _frame(rows=2)
    mlflow.set_experiment(experiment_id=_mlflow.experiment(EXPERIMENT))
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(
            name="model",
            python_model=Broken(),
            signature=infer_signature(x, pd.Series([0, 1])),
            pip_requirements=["mlflow", "pandas"],
        )
    return f"runs:/{run.info.run_id}/model", run.info.run_id
