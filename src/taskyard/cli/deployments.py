"""``taskyard deployments [stop MODEL]``: the model servers the deploy task left.

Local servers come from their records under the taskyard home; cluster deployments from the
registry (the deploy step tags the registered model with each target/namespace it serves in),
so any machine that reaches the tracking server sees them, without cluster credentials.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from taskyard.errors import TaskyardError


def add_deployments(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("deployments", parents=[common], help="local and cluster model servers")
    p.add_argument(
        "--tracking-uri",
        default="",
        help="MLflow to read cluster deployments from (default: $MLFLOW_TRACKING_URI, else "
        "the local store)",
    )
    p.set_defaults(func=cmd_deployments)
    dsub = p.add_subparsers(dest="deployments_command", metavar="stop")
    stop = dsub.add_parser("stop", parents=[common], help="stop a model's local server")
    stop.add_argument("name", metavar="MODEL")
    stop.set_defaults(func=cmd_deployments_stop)


def cmd_deployments(args: argparse.Namespace) -> int:
    from taskyard import deployments

    found = deployments.list_deployments()
    remote = cluster_deployments(args.tracking_uri)
    if not found and not remote:
        print("no local deployments are running and the registry records no cluster deployment")
        return 0
    table = Table("model", "version", "target", "state", "url", "where", "since", box=None)
    for d in found:
        table.add_row(d.model, d.version, "local", d.state, d.url, f"pid {d.pid}", d.started)
    for r in remote:
        where = r.get("namespace", "") + (f" ({r['mode']})" if r.get("mode") else "")
        table.add_row(
            r["model"], r.get("version", ""), r.get("target", ""), "recorded",
            r.get("url", ""), where, r.get("at", ""),
        )  # fmt: skip
    Console(highlight=False).print(table)
    return 0


def cluster_deployments(tracking_uri: str) -> list[dict[str, str]]:
    """What the registry records; nothing (and no new database) when there is no store."""
    from pathlib import Path

    from taskyard.home import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return []
    import mlflow

    from taskyard.kube.records import TAG_PREFIX, recorded

    try:
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        models = client.search_registered_models(max_results=1000)
    except Exception as e:
        raise TaskyardError(f"cannot read the registry at {uri}: {str(e).splitlines()[0]}") from e
    out = []
    for model in models:
        if any(k.startswith(TAG_PREFIX) for k in (model.tags or {})):
            out += recorded(client, model.name)
    return out


def cmd_deployments_stop(args: argparse.Namespace) -> int:
    from taskyard import deployments

    stopped = deployments.stop(args.name)
    if not stopped:
        raise TaskyardError(f"no running local deployment of {args.name!r}")
    for dep in stopped:
        print(f"stopped {dep.model} version {dep.version} ({dep.state}, {dep.url})")
    return 0
