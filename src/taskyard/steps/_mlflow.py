"""MLflow set-up shared by the ML steps: one tracking URI rule, artifacts next to SQLite."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from taskyard.errors import StepError
from taskyard.home import default_tracking_uri

# Set in every container of a Kubernetes pod (https://kubernetes.io/docs/tasks/run-application/
# access-api-from-pod/#directly-accessing-the-rest-api: "KUBERNETES_SERVICE_HOST and
# KUBERNETES_SERVICE_PORT environment variables"); never by the local runner.
IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
URI_PARAM = "mlflow-tracking-uri"


def require_tracking_uri() -> None:
    """Fail first thing when a cluster pod has no tracking URI.

    The SQLite fallback is one machine's store: on a cluster every task is its own pod with
    its own filesystem, so train would log to one SQLite file and evaluate could not load
    train's ``runs:/…`` model from another. Better one clear line than a run that fails late.
    """
    if os.environ.get(IN_CLUSTER_ENV) and not os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        raise StepError(
            f"param {URI_PARAM} is empty inside a Kubernetes pod: each task would get its own "
            f"SQLite store; set {URI_PARAM} to an MLflow server every task pod can reach"
        )


def tracking_uri() -> str:
    """The env's URI when set and non-empty, else the taskyard home's SQLite store (off-cluster
    only: :func:`require_tracking_uri`)."""
    require_tracking_uri()
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or default_tracking_uri()


def artifact_root(uri: str) -> str | None:
    """For a SQLite store, keep artifacts in a folder beside the database, not in ./mlruns."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "artifacts").resolve().as_uri()
    return None


CREDENTIAL_FILES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def load_credentials() -> list[str]:
    """Export the files of the optional ``mlflow`` workspace (a mounted Secret) as env vars.

    Returns the names exported; the values are never printed.
    """
    folder = os.environ.get("TASKYARD_MLFLOW_CREDENTIALS", "").strip()
    if not folder or not Path(folder).is_dir():
        return []
    found = []
    for name in CREDENTIAL_FILES:
        path = Path(folder) / name
        if path.is_file():
            os.environ[name] = path.read_text().strip()
            found.append(name)
    return found


def configure() -> str:
    """Point the environment at the store (creating a SQLite folder); returns the URI.

    Imports nothing heavy: a step that may replay its cache calls this, and ``setup()`` only
    once it has work for the client.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    load_credentials()
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


def setup() -> str:
    """:func:`configure`, and the mlflow client pointed at the same store."""
    uri = configure()
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment(name: str) -> str:
    """Get or create an experiment, with artifacts beside a SQLite store; returns its id."""
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(tracking_uri()))
    except Exception:  # another step created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def one_line(err: BaseException) -> str:
    """MLflow errors can span pages; the user gets the first meaningful line."""
    text = str(err).strip() or type(err).__name__
    line = text.splitlines()[0].strip()
    return line if len(line) <= 300 else line[:297] + "..."


def registry_client(tracking_uri: str) -> Any:
    """A client whose registry answered once, so a bad URI fails here with one clear line."""
    import mlflow

    try:
        client = mlflow.MlflowClient()
        client.search_registered_models(max_results=1)
    except Exception as e:
        raise StepError(f"cannot use the model registry at {tracking_uri}: {one_line(e)}") from e
    return client


def current_alias(client: Any, name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise StepError(f"cannot read registered model {name!r}: {one_line(e)}") from e
    version = (model.aliases or {}).get(alias)
    return str(version) if version is not None else None
