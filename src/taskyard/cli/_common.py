"""What every command module shares: the usage error, the parser class, ``-p`` pairs, tables.

Command modules import from here, never from :mod:`taskyard.cli` itself, so the package has no
import cycle: ``cli/__init__`` imports the command modules, they import ``_common``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from rich.console import Console
from rich.table import Table

from taskyard.errors import TaskyardError


class UsageError(TaskyardError):
    """A bad command line: exit 2, as argparse does."""

    exit_code = 2


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line ``error: …`` (and exit 2) for a bad command line."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


# A command group: ``add(sub, common)`` adds its sub-parser(s) and sets ``func=handler``.
Registrar = Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None]


def out() -> Console:
    """stdout, without rich's guessing highlighter (names and paths stay as they are)."""
    return Console(highlight=False)


def pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """``["k=v", …]`` from a repeatable flag; anything without ``=`` is a usage error."""
    result: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        result[key.strip()] = value
    return result


def listing(columns: list[str]) -> Table:
    """A borderless table whose first column never wraps (names stay greppable)."""
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for i, col in enumerate(columns):
        table.add_column(col, no_wrap=i == 0, overflow="fold")
    return table


def add_param_flag(p: argparse.ArgumentParser) -> None:
    """``-p KEY=VALUE``, shared by ``run`` and ``demo``."""
    p.add_argument(
        "-p", "--param", action="append", metavar="KEY=VALUE", help="pipeline param (repeatable)"
    )


def add_executor_flag(p: argparse.ArgumentParser) -> None:
    """``--executor``, shared by ``taskyard run`` and ``taskyard demo``."""
    p.add_argument(
        "--executor",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="run each task as a subprocess (default) or in its image under Docker "
        "(images/README.md)",
    )
