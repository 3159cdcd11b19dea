"""A project that owns its model: model.factory and train.entrypoint, on raw columns.

Real sklearn/torch/MLflow/skops throughout; the project is tests/ownmodel.py's fare project.
The pipeline tests run train-eval-deploy end to end and ask the served model for a raw row.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from taskyard.errors import StepError
from taskyard.ml import trust
from taskyard.steps import train as train_step
from tests import ownmodel
from tests.cliutil import latest_run, taskyard
from tests.gitutil import Remote
from tests.mlflowutil import migrated_store


@pytest.fixture
def store(tmp_path, monkeypatch, tmp_path_factory):
    return migrated_store(tmp_path, monkeypatch, tmp_path_factory)


def workspace(tmp_path: Path, kind: str = "factory", **extra: str) -> Path:
    ws = tmp_path / "ws"
    for name, text in {**ownmodel.files(kind), **extra}.items():
        path = ws / "repo" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return ws


def train(ws: Path, *argv: str) -> dict:
    args = train_step.build_parser().parse_args(
        ["--source", str(ws), "--subdirectory", "repo", *argv]
    )
    train_step.run(args)
    return json.loads((ws / "artifacts" / "train.json").read_text())


def raw_frame() -> pd.DataFrame:
    row = dict(ownmodel.RAW_ROW, pickup=pd.Timestamp(ownmodel.RAW_ROW["pickup"]))
    return pd.DataFrame([row])


def test_factory_pipeline_fits_on_training_rows_and_takes_raw_columns(tmp_path, store) -> None:
    import mlflow

    record = train(workspace(tmp_path))
    assert record["model_source"] == "factory"
    assert record["train_rows"] == 300 and record["holdout_rows"] == 100
    assert float(record["results"]["metric-value"]) > 0.6
    uri = record["results"]["model-uri"]
    model = mlflow.sklearn.load_model(uri)  # skops, with the project's types trusted
    clock = model.named_steps["pre"].named_transformers_["clock"]
    assert type(clock).__module__ == "fare.features"
    assert clock.n_fit_rows_ == 300  # the project's transformer never saw a holdout row
    assert model.named_steps["model"].n_estimators == 60  # model.params through set_params
    info = mlflow.models.get_model_info(uri)
    inputs = {c.name: str(c.type) for c in info.signature.inputs.inputs}
    assert inputs["city"] == "DataType.string" and inputs["pickup"] == "DataType.datetime"
    run_id = record["results"]["run-id"]
    code = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "model/code")}
    assert code == {"model/code/fare"}  # the project's package travels with the model
    assert mlflow.pyfunc.load_model(uri).predict(raw_frame()).tolist() in ([0], [1])


def test_factory_params_as_keyword_arguments(tmp_path, store) -> None:
    model = ownmodel.MODEL.replace("def build():", "def build(trees=10):").replace(
        "RandomForestClassifier(random_state=0)",
        "RandomForestClassifier(n_estimators=trees, random_state=0)",
    )
    ws = workspace(tmp_path, **{"fare/model.py": model})
    config = (ws / "repo" / "taskyard.toml").read_text().replace("model__n_estimators", "trees")
    (ws / "repo" / "taskyard.toml").write_text(config)
    record = train(ws, "--overrides", "trees=7")
    assert record["params"] == {"trees": 7}


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "def build():\n    return 42\n",
            "returned int, not an estimator with fit() and predict()",
        ),
        (
            "from sklearn.linear_model import LinearRegression\n"
            "def build():\n    return LinearRegression()\n",
            "returned a regressor, but model.task is classification",
        ),
        ("def build():\n    raise RuntimeError('no model today')\n", "failed: RuntimeError"),
    ],
)
def test_bad_factories_fail_with_one_line(tmp_path, store, code: str, message: str) -> None:
    ws = workspace(tmp_path, **{"fare/model.py": code})
    with pytest.raises(StepError, match=re.escape(message)):
        train(ws)


def test_factory_and_estimator_exclude_each_other(tmp_path) -> None:
    from taskyard import project

    ws = workspace(tmp_path)
    config = (ws / "repo" / "taskyard.toml").read_text()
    (ws / "repo" / "taskyard.toml").write_text(
        config.replace("[model]\n", '[model]\nestimator = "sklearn.tree.DecisionTreeClassifier"\n')
    )
    with pytest.raises(StepError, match=r"model\.factory and model\.estimator exclude each other"):
        project.load(ws, "repo")


def test_built_in_models_still_refuse_raw_columns(tmp_path) -> None:
    from taskyard import project

    ws = workspace(tmp_path)
    config = (ws / "repo" / "taskyard.toml").read_text()
    config = config.replace('factory = "python:fare.model:build"', "").replace(
        "model__n_estimators = 60", ""
    )
    (ws / "repo" / "taskyard.toml").write_text(config)
    with pytest.raises(StepError, match="feature column 'city' is not numeric"):
        project.load_frame(project.load(ws, "repo"))


def test_trust_comes_from_the_project(tmp_path: Path) -> None:
    """Library types and the project's own are trusted; others only when the project
    declares their package in its requirements."""
    root = tmp_path / "proj"
    root.mkdir()
    types = ["sklearn.pipeline.Pipeline", "numpy.dtype", "rich.text.Text"]
    with pytest.raises(StepError, match=r"will not load safely: rich\.text\.Text"):
        trust.trusted(types, root)
    (root / "requirements.txt").write_text("# what the project needs\nrich>=13  # pretty\n")
    assert trust.trusted(types, root) == sorted(types)
    with pytest.raises(StepError, match=r"rich\.text\.Text"):
        trust.trusted(types, None)  # a built-in model: libraries only


def test_entrypoint_trains_its_own_torch_module_with_taskyards_loop(tmp_path, store) -> None:
    import mlflow

    record = train(workspace(tmp_path, "entrypoint"))
    assert record["model_source"] == "entrypoint"
    assert record["device"] == "cpu" and record["params"]["amp"] == "off"
    assert float(record["results"]["metric-value"]) > 0.6
    run = mlflow.get_run(record["results"]["run-id"])
    assert run.data.params["fare.net"] == "FareNet"  # the entrypoint logged into the run
    model = mlflow.pyfunc.load_model(record["results"]["model-uri"])
    assert model.predict(raw_frame()).tolist() in ([0], [1])
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "model")}
    assert "model/artifacts" in files


def test_entrypoint_returning_junk_is_one_line(tmp_path, store) -> None:
    ws = workspace(
        tmp_path, "entrypoint", **{"fare/torch_model.py": "def train(ctx):\n    return 'x'\n"}
    )
    with pytest.raises(
        StepError, match=r"train\.entrypoint python:fare\.torch_model:train returned str"
    ):
        train(ws)


def published(tmp_path: Path, kind: str) -> tuple[str, str]:
    remote = Remote.create(tmp_path / "fare", ownmodel.files(kind))
    return remote.url, remote.head()


def post_raw_row(url: str) -> dict:
    body = {
        "dataframe_split": {
            "columns": list(ownmodel.RAW_ROW),
            "data": [list(ownmodel.RAW_ROW.values())],
        }
    }
    req = urllib.request.Request(
        url + "/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["factory", "entrypoint"])
def test_train_eval_deploy_promotes_the_project_model_and_serves_raw_rows(
    tmp_path: Path, ml_home: Path, kind: str
) -> None:
    url, commit = published(tmp_path, kind)
    proc = taskyard(
        "run", "train-eval-deploy", "-p", f"repo-url={url}", "-p", f"revision={commit}",
        "-p", "allow-file-url=true",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = latest_run()
    assert run.tasks["test"].results["passed"] == "2"  # the project's own tests ran
    assert run.tasks["evaluate"].results["promote"] == "true"
    assert run.tasks["promote"].results["model-version"] == "1"
    served = run.tasks["deploy"].results
    assert json.loads(served["smoke-prediction"])["predictions"]  # the logged raw example
    answer = post_raw_row(served["url"])
    assert answer["predictions"] in ([0], [1])


PYFUNC = '''import mlflow


class CityVote(mlflow.pyfunc.PythonModel):
    """Predicts each city's most common label seen in training."""

    def __init__(self, votes):
        self.votes = votes

    def predict(self, context, model_input, params=None):
        return [self.votes.get(c, 0) for c in model_input["city"]]


def train(ctx):
    frame = ctx.x_train.assign(y=ctx.y_train)
    return CityVote(frame.groupby("city")["y"].agg(lambda s: int(s.mode()[0])).to_dict())
'''


def test_entrypoint_returning_a_pythonmodel_is_logged_with_its_code(tmp_path, store) -> None:
    import mlflow

    ws = workspace(tmp_path, "entrypoint", **{"fare/torch_model.py": PYFUNC})
    record = train(ws)
    assert record["model_source"] == "entrypoint"
    model = mlflow.pyfunc.load_model(record["results"]["model-uri"])
    assert list(model.predict(raw_frame())) in ([0], [1])
    run_id = record["results"]["run-id"]
    code = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "model/code")}
    assert code == {"model/code/fare"}
