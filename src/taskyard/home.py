"""Where taskyard keeps its state on one machine (runs, the MLflow store, deployments)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$TASKYARD_HOME`` or ``~/.taskyard``."""
    return Path(os.environ.get("TASKYARD_HOME") or Path.home() / ".taskyard").expanduser()


def mlflow_dir() -> Path:
    return home() / "mlflow"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite store under the taskyard home."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{mlflow_dir() / 'mlflow.db'}"


def runs_dir() -> Path:
    return home() / "runs"


def deployments_dir() -> Path:
    return home() / "deployments"
