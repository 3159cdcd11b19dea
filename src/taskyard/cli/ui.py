"""``taskyard ui``: the MLflow UI on the local store the runs log to."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from taskyard.errors import TaskyardError


def add_ui(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ui", parents=[common], help="the MLflow UI on the local store")
    p.add_argument("--port", type=int, default=5000, help="default: 5000")
    p.set_defaults(func=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    import importlib.util

    from taskyard.home import default_tracking_uri
    from taskyard.steps._mlflow import artifact_root

    if importlib.util.find_spec("mlflow") is None:
        raise TaskyardError("mlflow is not installed", "pip install 'taskyard[train]'")
    uri = default_tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    root = artifact_root(uri)
    if root:
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--default-artifact-root", root]
    # One worker: a UI for one person; mlflow's default of 4 is heavy on a laptop.
    cmd += ["--host", "127.0.0.1", "--port", str(args.port), "--workers", "1"]
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store: {uri}); Ctrl-C to stop")
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
