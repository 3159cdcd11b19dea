"""Fixtures many test files share."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mlflowutil import migrated_store

# The warm interpreter of `taskyard run` outlives a run by default (run/warm.py); a test's
# runs get one that ends with them, so no test leaves one behind. Tests of the kept helper
# set it themselves and stop what they started.
os.environ["TASKYARD_WARM_IDLE"] = "0"


@pytest.fixture
def ml_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A fresh taskyard home with a migrated MLflow store; no model server outlives the test."""
    from taskyard import deployments

    migrated_store(tmp_path, monkeypatch, tmp_path_factory)
    yield Path(os.environ["TASKYARD_HOME"])
    for dep in deployments.list_deployments():
        deployments.stop_deployment(dep)
