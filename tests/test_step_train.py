"""The train step on the bundled example, with real MLflow (SQLite under a per-test home).

The steps run in-process through their own parser and ``run`` (one interpreter start instead
of one per test); one test runs ``python -m taskyard.steps.train`` to check the real CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taskyard.errors import StepError
from taskyard.steps import _cli
from taskyard.steps import train as train_step
from taskyard.steps._results import env_name
from tests.mlflowutil import migrated_store

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wine-classifier"
TINY = {
    "sklearn": "n_estimators=10,max_depth=3",
    "xgboost": "n_estimators=10,max_depth=2",
    "torch": "hidden=16,epochs=8",
}


def workspace(tmp_path: Path, config: str | None = None, example: Path = EXAMPLE) -> Path:
    """A source workspace holding a copy of the example under ``repo/`` (as git-clone does)."""
    ws = tmp_path / "ws"
    shutil.copytree(
        example, ws / "repo", ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache")
    )
    if config is not None:
        (ws / "repo" / "taskyard.toml").write_text(config)
    return ws


def set_framework(framework: str, task: str = "classification") -> str:
    """The example's config with another framework (and no sklearn-only keys)."""
    text = (EXAMPLE / "taskyard.toml").read_text()
    head, tail = text.split("[model]")[0], text[text.index("[metric]") :]
    return head + f'[model]\nframework = "{framework}"\ntask = "{task}"\n\n' + tail


def train(ws: Path, *argv: str) -> dict:
    """Run the step in-process; return its record (``artifacts/train.json``)."""
    args = train_step.build_parser().parse_args(
        ["--source", str(ws), "--subdirectory", "repo", *argv]
    )
    train_step.run(args)
    return json.loads((ws / "artifacts" / "train.json").read_text())


def cli_error(monkeypatch, capsys, module, argv: list[str]) -> str:
    """Run a step's CLI entry in-process; assert exit 1 and return the one stderr line."""
    monkeypatch.setattr(sys, "argv", ["step", *argv])
    with pytest.raises(SystemExit) as e:
        _cli.main(module.run, module.build_parser())
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # MLflow's own INFO logging may come first
    assert last.startswith("error: ")
    return last


@pytest.fixture
def store(tmp_path, monkeypatch, tmp_path_factory):
    return migrated_store(tmp_path, monkeypatch, tmp_path_factory)


def check_logged(results: dict, classes: set) -> None:
    import mlflow

    model = mlflow.pyfunc.load_model(results["model-uri"])
    from taskyard import project

    p = project.load(EXAMPLE)
    split = project.holdout(p, project.load_frame(p))
    pred = model.predict(split.x_test)
    assert set(map(int, pred)) <= classes  # class labels, not probabilities or logits
    assert len(pred) == len(split.x_test)
    reqs = Path(mlflow.artifacts.download_artifacts(results["model-uri"])) / "requirements.txt"
    pins = reqs.read_text().split()
    assert all("==" in pin for pin in pins), pins  # explicit pins, not the inferred venv
    assert len(pins) <= 6


def test_parse_overrides_is_typed():
    got = train_step.parse_overrides(" n=3, lr=0.5 ,flag=true,off=False,name=gini,d=none,h=64x32")
    assert got == {
        "n": 3,
        "lr": 0.5,
        "flag": True,
        "off": False,
        "name": "gini",
        "d": None,
        "h": "64x32",
    }
    assert train_step.parse_overrides("") == {}
    with pytest.raises(StepError, match="not key=value"):
        train_step.parse_overrides("n_estimators")


def test_sklearn_train_logs_a_loadable_model(tmp_path, store, monkeypatch):
    import mlflow

    ws = workspace(tmp_path)
    out = tmp_path / "results"
    for name in ("run-id", "model-uri", "model-name", "metric-name", "metric-value", "data-hash"):
        monkeypatch.setenv(env_name(name), str(out / name))
    record = train(ws, "--overrides", TINY["sklearn"], "--commit", "0123abcd" * 5)
    results = record["results"]

    assert {p.name: p.read_text() for p in out.iterdir()} == results
    assert results["model-uri"] == f"runs:/{results['run-id']}/model"
    assert results["model-name"] == "wine-classifier"
    assert results["metric-name"] == "f1_macro"
    assert 0.8 < float(results["metric-value"]) <= 1.0
    assert len(results["data-hash"]) == 64

    run = mlflow.get_run(results["run-id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["n_estimators"] == "10"  # the override beat the config's 100
    assert run.data.params["max_depth"] == "3"
    assert run.data.params["random_state"] == "42"  # seeded from data.seed
    assert run.data.tags["mlflow.source.git.commit"] == "0123abcd" * 5
    assert run.data.tags["taskyard.data_hash"] == results["data-hash"]
    assert run.data.tags["taskyard.framework"] == "sklearn"
    assert run.data.tags["taskyard.version"]
    assert run.data.metrics["f1_macro"] == pytest.approx(float(results["metric-value"]))
    assert run.data.metrics["training_time_s"] > 0
    assert mlflow.get_experiment(run.info.experiment_id).name == "wine-classifier"
    check_logged(results, {0, 1, 2})

    conf = mlflow.models.get_model_info(results["model-uri"]).flavors["sklearn"]
    assert conf["serialization_format"] == "skops"
    assert record["params"]["n_estimators"] == 10


def test_same_data_same_hash_and_score(tmp_path, store):
    a = train(workspace(tmp_path / "a"), "--overrides", TINY["sklearn"])["results"]
    # --cache false: a second training, not a replay of the first (tests/test_step_cache.py)
    b = train(workspace(tmp_path / "b"), "--overrides", TINY["sklearn"], "--cache", "false")
    b = b["results"]
    assert a["data-hash"] == b["data-hash"]
    assert a["metric-value"] == b["metric-value"]
    assert a["run-id"] != b["run-id"]


def test_model_name_flag_and_unknown_hyperparameter(tmp_path, store, monkeypatch, capsys):
    ws = workspace(tmp_path)
    results = train(ws, "--overrides", "n_estimators=3", "--model-name", "other")["results"]
    assert results["model-name"] == "other"
    err = cli_error(
        monkeypatch,
        capsys,
        train_step,
        ["--source", str(ws), "--subdirectory", "repo", "--overrides", "n_estimator=5"],
    )
    assert "unknown hyperparameter 'n_estimator'" in err
    assert "did you mean n_estimators" in err


def test_bad_config_fails_with_one_line(tmp_path, store, monkeypatch, capsys):
    bad = (EXAMPLE / "taskyard.toml").read_text().replace('"sklearn"', '"keras"')
    ws = workspace(tmp_path, bad)
    err = cli_error(
        monkeypatch, capsys, train_step, ["--source", str(ws), "--subdirectory", "repo"]
    )
    assert "model.framework" in err and "keras" in err


def test_missing_target_via_the_real_cli(tmp_path, store):
    text = (EXAMPLE / "taskyard.toml").read_text().replace('target = "target"', 'target = "y"')
    ws = workspace(tmp_path, text)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskyard.steps.train",
            "--source",
            str(ws),
            "--subdirectory",
            "repo",
        ],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line, no traceback
    assert "error: data.target: column 'y' not in the data" in proc.stderr
    assert not (ws / "artifacts" / "train.json").exists()


@pytest.mark.slow
def test_xgboost_train(tmp_path, store):
    import mlflow

    ws = workspace(tmp_path, set_framework("xgboost"))
    record = train(ws, "--overrides", TINY["xgboost"])
    results = record["results"]
    assert float(results["metric-value"]) > 0.8
    assert record["device"] == "cpu"
    assert "xgboost" in mlflow.models.get_model_info(results["model-uri"]).flavors
    check_logged(results, {0, 1, 2})


def test_xgboost_rejects_reserved_and_unknown_params(tmp_path, store):
    ws = workspace(tmp_path, set_framework("xgboost"))
    with pytest.raises(StepError, match="set it with --device"):
        train(ws, "--overrides", "device=cuda")
    with pytest.raises(StepError, match="unknown hyperparameter 'max_dept'"):
        train(ws, "--overrides", "max_dept=3")


@pytest.mark.slow
def test_torch_train_predicts_labels(tmp_path, store):
    import mlflow

    ws = workspace(tmp_path, set_framework("torch"))
    record = train(ws, "--overrides", TINY["torch"] + ",batch-size=16", "--device", "auto")
    results = record["results"]
    assert float(results["metric-value"]) > 0.8
    assert record["params"]["hidden"] == "16"
    assert record["params"]["batch_size"] == 16
    info = mlflow.models.get_model_info(results["model-uri"])
    assert info.signature is not None and info.saved_input_example_info is not None
    check_logged(results, {0, 1, 2})
    again = train(
        workspace(tmp_path / "again", set_framework("torch")), "--overrides", TINY["torch"]
    )
    assert (
        again["results"]["metric-value"]
        == train(
            workspace(tmp_path / "third", set_framework("torch")), "--overrides", TINY["torch"]
        )["results"]["metric-value"]
    )  # seeded


def test_torch_cuda_without_a_gpu_is_a_clear_error(tmp_path, store):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    ws = workspace(tmp_path, set_framework("torch"))
    with pytest.raises(StepError, match="--device cuda: no CUDA device is visible for torch"):
        train(ws, "--device", "cuda")
    with pytest.raises(StepError, match="unknown hyperparameter 'layers'"):
        train(ws, "--overrides", "layers=3")


@pytest.mark.slow
def test_torch_regression_unscales_its_output(tmp_path, store):
    import mlflow

    from taskyard import project

    config = (
        '[project]\nname = "diabetes"\n[data]\nsource = "sklearn:load_diabetes"\n'
        '[model]\nframework = "torch"\ntask = "regression"\n'
        "[model.params]\nhidden = 16\nepochs = 30\n"
    )
    ws = workspace(tmp_path, config)
    results = train(ws)["results"]
    assert results["metric-name"] == "rmse"
    assert float(results["metric-value"]) < 75  # predicting the mean gives ~77
    p = project.load(ws / "repo")
    split = project.holdout(p, project.load_frame(p))
    pred = mlflow.pyfunc.load_model(results["model-uri"]).predict(split.x_test)
    assert 50 < float(pred.mean()) < 250  # in target units, not standardised


def test_example_project_own_tests_pass(tmp_path):
    ws = workspace(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=ws / "repo",
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_parser_takes_every_catalog_arg():
    from taskyard.catalog.tasks import train as catalog

    for task in (catalog.TASK, catalog.GPU_TASK):
        fixed = {"$(params.device)": "cpu", "$(params.cache)": "true"}
        argv = [fixed.get(a) or a.replace("$(", "x") for a in task.args]
        args = train_step.build_parser().parse_args(argv)
        assert args.device == "cpu" and args.overrides == "xparams.overrides)"
        assert {p.name for p in task.results} == {
            "run-id", "model-uri", "model-name", "metric-name", "metric-value", "data-hash",
            "cached-from",
        }  # fmt: skip
