"""The evaluate step: real models, a real registry (SQLite), real aliases.

Champions are registered and aliased with ``MlflowClient`` directly: promoting is another
step's job; here only the decision is under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskyard.errors import StepError
from taskyard.steps import evaluate as evaluate_step
from taskyard.steps._results import env_name
from tests.test_step_train import (
    EXAMPLE,
    cli_error,
    migrated_store,
    set_framework,
    train,
    workspace,
)

WEAK = "n_estimators=1,max_depth=1"  # f1_macro ~0.51 on the example's holdout
GOOD = "n_estimators=10,max_depth=2"  # ~0.956
BETTER = "n_estimators=20,max_depth=4"  # ~0.977
NAME = "wine-classifier"
DIABETES = (
    '[project]\nname = "diabetes"\n'
    '[data]\nsource = "sklearn:load_diabetes"\ntarget = "target"\ntest-size = 0.25\nseed = 42\n'
    '[model]\nframework = "sklearn"\ntask = "regression"\n'
    'estimator = "sklearn.linear_model.Ridge"\n'
    '[metric]\nname = "rmse"\n[evaluate]\nmin-score = 60\n'
)


@pytest.fixture
def store(tmp_path, monkeypatch, tmp_path_factory):
    return migrated_store(tmp_path, monkeypatch, tmp_path_factory)


@pytest.fixture
def ws(tmp_path):
    return workspace(tmp_path)


def candidate(ws: Path, overrides: str) -> str:
    return train(ws, "--overrides", overrides)["results"]["model-uri"]


def evaluate(ws: Path, uri: str, *argv: str) -> dict:
    args = evaluate_step.build_parser().parse_args(
        ["--source", str(ws), "--subdirectory", "repo", "--model-uri", uri, *argv]
    )
    evaluate_step.run(args)
    return json.loads((ws / "artifacts" / "evaluate.json").read_text())


def crown(uri: str, name: str = NAME, alias: str = "champion") -> str:
    import mlflow
    from mlflow import MlflowClient

    version = mlflow.register_model(uri, name).version
    MlflowClient().set_registered_model_alias(name, alias, version)
    return str(version)


def test_no_champion_threshold_pass(ws, store):
    import mlflow
    from mlflow import MlflowClient

    trained = train(ws, "--overrides", GOOD)["results"]
    record = evaluate(ws, trained["model-uri"])
    r = record["results"]
    assert r["promote"] == "true"
    assert r["metric-name"] == "f1_macro"
    assert r["candidate-score"] == trained["metric-value"]  # same holdout, same function
    assert r["champion-score"] == "" and r["champion-version"] == ""
    assert r["report"] == "artifacts/evaluation.md"

    report = (ws / r["report"]).read_text()
    assert "**PROMOTE**" in report
    assert "there is no champion to beat" in report
    assert ">= 0.8" in report
    data = json.loads((ws / "artifacts" / "evaluation.json").read_text())
    assert data["promote"] is True and data["champion_version"] is None

    run = mlflow.get_run(r["eval-run-id"])
    assert run.data.metrics["candidate_f1_macro"] == pytest.approx(float(r["candidate-score"]))
    assert run.data.metrics["promote"] == 1.0
    assert run.data.tags["taskyard.decision"] == "promote"
    assert run.data.params["min_score"] == "0.8"
    files = {a.path for a in MlflowClient().list_artifacts(r["eval-run-id"], "evaluation")}
    assert files == {"evaluation/evaluation.json", "evaluation/evaluation.md"}


def test_no_champion_threshold_fail_and_flag_overrides(ws, store):
    weak = candidate(ws, WEAK)
    r = evaluate(ws, weak)["results"]
    assert r["promote"] == "false"
    assert float(r["candidate-score"]) < 0.8
    report = (ws / "artifacts" / "evaluation.md").read_text()
    assert "**DO NOT PROMOTE**" in report and "misses the threshold >= 0.8" in report
    # An explicit --min-score wins over the config; "" takes the config's.
    assert evaluate(ws, weak, "--min-score", "0.5")["results"]["promote"] == "true"
    assert evaluate(ws, weak, "--min-score", "")["results"]["promote"] == "false"


def test_better_candidate_replaces_the_champion(ws, store):
    version = crown(candidate(ws, GOOD))
    better = candidate(ws, BETTER)
    record = evaluate(ws, better)
    r = record["results"]
    assert r["promote"] == "true"
    assert r["champion-version"] == version == "1"
    assert float(r["candidate-score"]) > float(r["champion-score"]) > 0.9
    assert record["improvement"] == pytest.approx(
        float(r["candidate-score"]) - float(r["champion-score"]), abs=1e-5
    )
    assert "beats champion v1" in (ws / "artifacts" / "evaluation.md").read_text()
    # The same candidate, but the gain (~0.02) is below a required 0.05.
    r = evaluate(ws, better, "--min-improvement", "0.05")["results"]
    assert r["promote"] == "false"
    assert "less than the minimum 0.05" in (ws / "artifacts" / "evaluation.md").read_text()


def test_worse_candidate_or_a_tie_keeps_the_champion(ws, store):
    import mlflow

    champion_uri = candidate(ws, BETTER)
    crown(champion_uri)
    r = evaluate(ws, candidate(ws, GOOD))["results"]
    assert r["promote"] == "false"  # passes the threshold, but is worse
    assert float(r["candidate-score"]) < float(r["champion-score"])
    assert "is worse than champion v1" in (ws / "artifacts" / "evaluation.md").read_text()

    r = evaluate(ws, champion_uri)["results"]  # the very same model: a tie
    assert r["promote"] == "false"
    assert r["candidate-score"] == r["champion-score"]
    report = (ws / "artifacts" / "evaluation.md").read_text()
    assert "candidate ties champion v1" in report and "the champion stays" in report
    assert mlflow.get_run(r["eval-run-id"]).data.tags["taskyard.decision"] == "keep"


def eval_runs() -> list:
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(NAME)
    return client.search_runs([exp.experiment_id], "tags.`taskyard.step` = 'evaluate'")


def test_the_champion_judged_again_ties_from_its_earlier_score(ws, store, capsys, monkeypatch):
    """The run after the one that promoted a candidate judges it against itself: a tie, known
    without loading either model; the score is the one its first judgement computed (cache
    entry found by the score key), no eval run is logged. Anything else is scored."""
    from taskyard.steps import _cache

    uri = candidate(ws, GOOD)
    first = evaluate(ws, uri)["results"]
    assert first["promote"] == "true" and len(eval_runs()) == 1
    version = crown(uri)  # as promote registers it (MLflow 3: a models:/m-… source)
    capsys.readouterr()
    cached_from = ws / "cached-from"
    monkeypatch.setenv(env_name(_cache.FROM_RESULT), str(cached_from))

    def unloadable(uri: str, what: str):
        raise AssertionError(f"loaded the {what} model {uri}")

    with monkeypatch.context() as m:
        m.setattr(evaluate_step, "load_model", unloadable)
        again = evaluate(ws, uri)
    r = again["results"]
    said = capsys.readouterr().out
    assert r["promote"] == "false" and r["champion-version"] == version
    assert r["candidate-score"] == r["champion-score"] == first["candidate-score"]
    assert r["eval-run-id"] == first["eval-run-id"]  # the run that scored it
    assert len(eval_runs()) == 1  # nothing scored, nothing logged
    assert f"the candidate is champion v{version} itself" in said, said
    assert cached_from.read_text() and cached_from.read_text() in said  # shown as Cached
    assert again["holdout_rows"] == 45 and again["champion_score"] == again["candidate_score"]
    report = (ws / "artifacts" / "evaluation.md").read_text()
    assert "candidate ties champion v1" in report and "not scored again" in report

    # another candidate against that champion: both are scored, a new decision is logged
    better = evaluate(ws, candidate(ws, BETTER))["results"]
    assert better["promote"] == "true" and better["champion-score"] == first["candidate-score"]
    assert better["eval-run-id"] != first["eval-run-id"] and len(eval_runs()) == 2
    # --cache false: scored again, though it is the champion
    off = evaluate(ws, uri, "--cache", "false")["results"]
    assert off["promote"] == "false" and off["candidate-score"] == first["candidate-score"]
    assert off["eval-run-id"] not in (first["eval-run-id"], better["eval-run-id"])
    assert len(eval_runs()) == 3


def test_registered_model_without_the_alias_is_no_champion(ws, store):
    import mlflow

    mlflow.register_model(candidate(ws, BETTER), NAME)  # version 1, no alias
    r = evaluate(ws, candidate(ws, GOOD))["results"]
    assert r["promote"] == "true"
    assert r["champion-version"] == ""
    # Another alias name is looked up as asked.
    crown(candidate(ws, BETTER), alias="prod")
    r = evaluate(ws, candidate(ws, GOOD), "--champion-alias", "prod")["results"]
    assert r["promote"] == "false" and r["champion-version"] == "2"


def test_champion_that_cannot_score_the_new_features(tmp_path, store):
    crown(candidate(workspace(tmp_path / "old"), GOOD))
    config = (
        (EXAMPLE / "taskyard.toml")
        .read_text()
        .replace(
            "seed = 42",
            'seed = 42\nfeatures = ["alcohol", "flavanoids", "color_intensity", "proline"]',
        )
    )
    ws = workspace(tmp_path / "new", config)
    record = evaluate(ws, candidate(ws, GOOD))
    assert record["results"]["champion-version"] == "1"
    assert record["results"]["champion-score"] == ""
    assert record["results"]["promote"] == "true"  # judged on the threshold alone
    assert "champion cannot score this holdout" in record["notes"][0]


def test_regression_lower_is_better(tmp_path, store):
    ws = workspace(tmp_path, DIABETES)
    crown(candidate(ws, "alpha=10"), name="diabetes")  # rmse ~68.3: misses <= 60
    first = evaluate(ws, candidate(ws, "alpha=10"))["results"]
    assert first["metric-name"] == "rmse" and first["promote"] == "false"
    assert "misses the threshold <= 60" in (ws / "artifacts" / "evaluation.md").read_text()

    record = evaluate(ws, candidate(ws, "alpha=0.1"))  # rmse ~53.0: lower is better
    r = record["results"]
    assert r["promote"] == "true"
    assert float(r["candidate-score"]) < float(r["champion-score"])
    assert record["improvement"] > 10
    assert "lower is better" in (ws / "artifacts" / "evaluation.md").read_text()

    r = evaluate(ws, candidate(ws, "alpha=100"), "--min-score", "80")["results"]
    assert r["promote"] == "false"  # under the threshold, but worse than the champion


def test_roc_auc_uses_probabilities(tmp_path, store):
    config = (EXAMPLE / "taskyard.toml").read_text().replace('"f1_macro"', '"roc_auc"')
    ws = workspace(tmp_path, config)
    trained = train(ws, "--overrides", GOOD)["results"]
    assert trained["metric-name"] == "roc_auc"
    r = evaluate(ws, trained["model-uri"])["results"]
    assert r["candidate-score"] == trained["metric-value"]
    assert 0.95 < float(r["candidate-score"]) <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["xgboost", "torch"])
def test_other_frameworks_compete_on_the_same_holdout(tmp_path, store, framework):
    base = workspace(tmp_path / "sk")
    crown(candidate(base, WEAK))
    overrides = {"xgboost": "n_estimators=10,max_depth=2", "torch": "hidden=16,epochs=8"}
    config = set_framework(framework).replace('"f1_macro"', '"roc_auc"')
    ws = workspace(tmp_path / framework, config)
    trained = train(ws, "--overrides", overrides[framework])["results"]
    r = evaluate(ws, trained["model-uri"])["results"]
    assert r["metric-name"] == "roc_auc"
    assert r["candidate-score"] == trained["metric-value"]
    assert r["champion-version"] == "1"
    assert r["promote"] == "true"


def test_bad_inputs_fail_with_one_line(ws, store, monkeypatch, capsys):
    base = ["--source", str(ws), "--subdirectory", "repo", "--model-uri"]
    err = cli_error(
        monkeypatch, capsys, evaluate_step, [*base, "runs:/x/model", "--min-score", "abc"]
    )
    assert err == "error: --min-score: expected a number, got 'abc'"
    err = cli_error(monkeypatch, capsys, evaluate_step, [*base, "runs:/0123456789abcdef/model"])
    assert err.startswith("error: cannot load the candidate model runs:/0123456789abcdef/model")
    with pytest.raises(StepError, match="must be >= 0"):
        evaluate(ws, "runs:/x/model", "--min-improvement", "-0.1")


def test_parser_takes_every_catalog_arg():
    from taskyard.catalog.tasks import evaluate as catalog

    args = evaluate_step.build_parser().parse_args(
        ["true" if a == "$(params.cache)" else a.replace("$(", "x") for a in catalog.TASK.args]
    )
    assert args.champion_alias == "xparams.champion-alias)"
