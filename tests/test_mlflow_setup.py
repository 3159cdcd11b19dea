"""The ML steps' MLflow set-up: the URI rule and credentials from the optional workspace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskyard.steps import _mlflow


def test_empty_uri_means_the_taskyard_home_store(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # what an engine passes for an empty param
    assert _mlflow.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert _mlflow.artifact_root(_mlflow.tracking_uri()) == (
        (tmp_path / "mlflow" / "artifacts").resolve().as_uri()
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert _mlflow.tracking_uri() == "http://mlflow.example:5000"
    assert _mlflow.artifact_root("http://mlflow.example:5000") is None


@pytest.mark.parametrize("bound", [True, False])
def test_credentials_come_from_the_mounted_secret(tmp_path: Path, monkeypatch, bound) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "MLFLOW_TRACKING_USERNAME").write_text("ci-bot\n")
    (secret / "MLFLOW_TRACKING_PASSWORD").write_text("s3cret\n")
    for name in _mlflow.CREDENTIAL_FILES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TASKYARD_MLFLOW_CREDENTIALS", str(secret) if bound else "")
    found = _mlflow.load_credentials()
    if bound:
        assert found == ["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret"
    else:
        assert found == [] and "MLFLOW_TRACKING_PASSWORD" not in os.environ
