"""``taskyard serve``: the listener owns its flags, so ``main`` hands it the argv untouched."""

from __future__ import annotations

import argparse
import sys


def add_serve(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Listed for --help only: :func:`dispatch` runs ``serve …`` before argparse sees it."""
    sub.add_parser("serve", help="the local webhook + cron listener feeding the local runner")


def dispatch(argv: list[str]) -> int:
    """Run the listener with its own parser (its --help included); the serve extra may lack."""
    try:
        from taskyard.serve.app import serve_main
    except ImportError as e:
        print(f"error: taskyard serve: {e} (pip install 'taskyard[serve]')", file=sys.stderr)
        return 1
    return serve_main(argv)
