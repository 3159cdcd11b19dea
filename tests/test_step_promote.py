"""promote against a real MLflow registry (SQLite under a per-test TASKYARD_HOME)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskyard import __version__
from taskyard.errors import StepError
from taskyard.steps import promote
from taskyard.steps._results import env_name
from tests import mlflowutil

MODEL = "iris-like"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return mlflowutil.use_store(monkeypatch, tmp_path / "home")


def results_env(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Path:
    for name in ("model-version", "previous-version", "promoted"):
        monkeypatch.setenv(env_name(name), str(folder / name))
    return folder


def run_promote(source: Path, uri: str, *extra: str) -> dict:
    argv = ["--source", str(source), "--model-uri", uri, "--model-name", MODEL, *extra]
    return promote.run(promote.build_parser().parse_args(argv))


def aliases() -> dict[str, str]:
    import mlflow

    return {k: str(v) for k, v in mlflow.MlflowClient().get_registered_model(MODEL).aliases.items()}


def test_promote_twice_moves_champion_and_keeps_previous(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    out = results_env(monkeypatch, tmp_path / "results")
    uri1, _ = mlflowutil.log_sklearn_model(seed=1)
    uri2, run2 = mlflowutil.log_sklearn_model(seed=2)

    first = run_promote(tmp_path / "ws", uri1)
    assert first["results"] == {"model-version": "1", "previous-version": "", "promoted": "true"}
    assert aliases() == {"champion": "1"}

    second = run_promote(
        tmp_path / "ws", uri2, "--commit", "abc123", "--data-hash", "sha256:beef",
        "--eval-run-id", "evalrun9",
    )  # fmt: skip
    assert second["results"] == {"model-version": "2", "previous-version": "1", "promoted": "true"}
    assert aliases() == {"champion": "2", "previous-champion": "1"}
    assert (out / "model-version").read_text() == "2"
    assert (out / "previous-version").read_text() == "1"

    version = mlflow.MlflowClient().get_model_version(MODEL, "2")
    assert str(version.status).endswith("READY")
    assert version.run_id == run2
    assert version.tags["taskyard.commit"] == "abc123"
    assert version.tags["taskyard.data_hash"] == "sha256:beef"
    assert version.tags["taskyard.eval_run_id"] == "evalrun9"
    assert version.tags["taskyard.source_run_id"] == run2
    assert version.tags["taskyard.version"] == __version__
    # Empty lineage params leave no empty tags behind.
    v1_tags = mlflow.MlflowClient().get_model_version(MODEL, "1").tags
    assert "taskyard.commit" not in v1_tags and "taskyard.eval_run_id" not in v1_tags

    record = json.loads((tmp_path / "ws" / "artifacts" / "promote.json").read_text())
    assert record["results"] == second["results"]
    assert record["tags"]["taskyard.commit"] == "abc123"


def test_bad_model_uri_fails_in_one_line_and_keeps_aliases(store: str, tmp_path: Path) -> None:
    import mlflow

    uri1, _ = mlflowutil.log_sklearn_model(seed=1)
    uri2, _ = mlflowutil.log_sklearn_model(seed=2)
    run_promote(tmp_path / "ws", uri1)
    run_promote(tmp_path / "ws", uri2)
    before = aliases()

    proc = subprocess.run(
        [sys.executable, "-m", "taskyard.steps.promote", "--source", str(tmp_path / "ws"),
         "--model-uri", "runs:/0123456789abcdef/model", "--model-name", MODEL],
        capture_output=True, text=True, env=dict(os.environ), timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot load model 'runs:/0123456789abcdef/model'")
    assert "Traceback" not in proc.stderr
    assert aliases() == before == {"champion": "2", "previous-champion": "1"}
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")) == 2
    record = json.loads((tmp_path / "ws" / "artifacts" / "promote.json").read_text())
    assert record["results"] == {} and "cannot load model" in record["error"]


def test_bad_registry_uri_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")
    with pytest.raises(StepError, match=r"cannot use the model registry at bogus://nowhere"):
        run_promote(tmp_path / "ws", "runs:/abc/model")


def test_same_alias_twice_is_rejected(store: str, tmp_path: Path) -> None:
    with pytest.raises(StepError, match="both 'champion'"):
        run_promote(tmp_path / "ws", "runs:/abc/model", "--previous-alias", "champion")
