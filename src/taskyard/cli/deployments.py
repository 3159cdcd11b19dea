"""``taskyard deployments [stop MODEL]``: the local model servers the deploy task left."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from taskyard.errors import TaskyardError


def add_deployments(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("deployments", parents=[common], help="local model servers left running")
    p.set_defaults(func=cmd_deployments)
    dsub = p.add_subparsers(dest="deployments_command", metavar="stop")
    stop = dsub.add_parser("stop", parents=[common], help="stop a model's local server")
    stop.add_argument("name", metavar="MODEL")
    stop.set_defaults(func=cmd_deployments_stop)


def cmd_deployments(args: argparse.Namespace) -> int:
    from taskyard import deployments

    found = deployments.list_deployments()
    if not found:
        print("no local deployments are running")
        return 0
    table = Table("model", "version", "alias", "state", "url", "pid", "started", box=None)
    for d in found:
        table.add_row(d.model, d.version, d.alias, d.state, d.url, str(d.pid), d.started)
    Console(highlight=False).print(table)
    return 0


def cmd_deployments_stop(args: argparse.Namespace) -> int:
    from taskyard import deployments

    stopped = deployments.stop(args.name)
    if not stopped:
        raise TaskyardError(f"no running local deployment of {args.name!r}")
    for dep in stopped:
        print(f"stopped {dep.model} version {dep.version} ({dep.state}, {dep.url})")
    return 0
