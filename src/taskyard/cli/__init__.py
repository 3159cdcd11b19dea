"""``taskyard``: run pipelines locally, look at past runs, list the catalog, render, open the UI.

Every expected failure prints ``error: <one line>`` on stderr: exit 2 for usage errors (bad
flags, unknown pipeline/param/workspace), 1 for failures (a failed run, a drifted render),
130 for Ctrl-C. ``--debug`` adds the traceback.

One module per command group; each has a function ``add(sub, common)`` that adds its
sub-parser and sets ``func=handler``, listed in :data:`COMMANDS`. Command modules share
helpers through :mod:`taskyard.cli._common`, never through this module, so nothing imports
back into it.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from taskyard import __version__
from taskyard.cli import catalog, demo, deployments, images, init, render, run, serve, ui, warm
from taskyard.cli._common import Parser, Registrar, UsageError, pairs
from taskyard.cli.run import execute, failure
from taskyard.errors import TaskyardError

COMMANDS: list[Registrar] = [
    run.add_run,
    demo.add_demo,
    run.add_runs,
    deployments.add_deployments,
    serve.add_serve,
    catalog.add_catalog,
    init.add_init,
    ui.add_ui,
    render.add_render,
    images.add_images,
    warm.add_warm,
]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    parser = Parser(
        prog="taskyard",
        description="ML CI/CD tasks defined once in Python: run locally, render to Tekton/Argo.",
    )
    parser.add_argument("--version", action="version", version=f"taskyard {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for add in COMMANDS:
        add(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # the listener owns its flags, --help included
        return serve.dispatch(argv[1:])
    args = build_parser().parse_args(argv)
    debug = args.debug or bool(os.environ.get("TASKYARD_DEBUG"))
    try:
        return args.func(args)
    except TaskyardError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


__all__ = ["COMMANDS", "UsageError", "build_parser", "execute", "failure", "main", "pairs"]
