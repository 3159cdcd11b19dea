"""``taskyard demo``: the main job, train-eval-deploy on the bundled example repository."""

from __future__ import annotations

import argparse

from rich.console import Console

from taskyard.cli._common import add_executor_flag, add_param_flag, pairs
from taskyard.cli.run import add_warm_flag, execute


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
    add_param_flag(p)
    p.add_argument("--pipeline", default="train-eval-deploy", help="default: train-eval-deploy")
    add_executor_flag(p)
    add_warm_flag(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
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
    code = execute(
        args.pipeline, params, {}, max_parallel=4, executor=args.executor, warm=args.warm
    )
    if code == 0 and params.get("keep-serving", "true") == "true":
        from taskyard import deployments

        for dep in deployments.list_deployments():
            Console(highlight=False).print(
                f"serving {dep.model} version {dep.version} at [bold]{dep.url}[/] "
                f"(stop: taskyard deployments stop {dep.name})"
            )
    return code
