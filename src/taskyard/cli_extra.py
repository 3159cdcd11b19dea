"""``taskyard demo`` and ``taskyard deployments``: the main job and the servers it leaves."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from taskyard.errors import TaskyardError


def add_demo(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="the main job: train-eval-deploy on the bundled example repo",
        description=(
            "Commit examples/wine-classifier into a local bare git repository under the "
            "taskyard home and run train-eval-deploy against it: clone, test, train, evaluate "
            "against the champion, promote and deploy only if better."
        ),
    )
    p.add_argument(
        "-p", "--param", action="append", metavar="KEY=VALUE", help="pipeline param (repeatable)"
    )
    p.add_argument("--pipeline", default="train-eval-deploy", help="default: train-eval-deploy")
    add_executor_flag(p)
    p.set_defaults(func=cmd_demo)


def add_executor_flag(p: argparse.ArgumentParser) -> None:
    """``--executor``, shared by ``taskyard run`` and ``taskyard demo``."""
    p.add_argument(
        "--executor",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="run each task as a subprocess (default) or in its image under Docker "
        "(images/README.md)",
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from taskyard.cli import execute, pairs
    from taskyard.demo import publish

    url, commit = publish()
    # The example is a local bare repository: git-clone refuses file:// unless allowed.
    params = {
        "repo-url": url,
        "revision": commit,
        "allow-file-url": "true",
        **pairs(args.param, "-p"),
    }
    Console(highlight=False).print(f"example repository {url} at [bold]{commit[:12]}[/]")
    code = execute(args.pipeline, params, {}, max_parallel=4, executor=args.executor)
    if code == 0 and params.get("keep-serving", "true") == "true":
        from taskyard import deployments

        for dep in deployments.list_deployments():
            Console(highlight=False).print(
                f"serving {dep.model} version {dep.version} at [bold]{dep.url}[/] "
                f"(stop: taskyard deployments stop {dep.name})"
            )
    return code


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


def add_serve(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Listed for --help only: ``cli.main`` hands ``serve …`` to the listener's own parser."""
    sub.add_parser("serve", help="the local webhook + cron listener feeding the local runner")
