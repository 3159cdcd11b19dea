"""What every step CLI shares: flag parsing helpers, one-line errors, step records."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from taskyard.errors import TaskyardError

ARTIFACTS = "artifacts"


def parser(step: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m taskyard.steps.{step}", description=description)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def boolean(value: str) -> bool:
    """Parse the string booleans params carry ("true"/"false", as Tekton does).

    "" never reaches it from :func:`parse_args` (it means "not set": the flag's default);
    were it passed directly, it is an error rather than a silent ``False``.
    """
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def empty_is_a_value(action: argparse.Action) -> argparse.Action:
    """Mark a flag whose empty value means something of its own (not "use the default")."""
    action.empty_is_a_value = True  # type: ignore[attr-defined]
    return action


def drop_empty(argv: list[str], p: argparse.ArgumentParser) -> list[str]:
    """Leave out ``--flag=`` (an empty param) so the flag takes its default.

    Engines cannot pass "no value": an unset param arrives as "" (Param's docstring, "the empty
    string always means not set"), and a typed flag would parse it as a value (``boolean`` as
    false, ``choices`` and numbers as a crash). Kept: flags whose default is already "" or
    None (no difference), required flags (their step names the missing value) and flags
    marked with :func:`empty_is_a_value`.
    """
    by_flag = {s: a for a in p._actions for s in a.option_strings}
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        action = by_flag.get(flag)
        if (
            eq
            and not value.strip()
            and action is not None
            and action.default not in ("", None)
            and not action.required
            and not getattr(action, "empty_is_a_value", False)
        ):
            continue
        out.append(arg)
    return out


def parse_args(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """What a step sees: values glued to their flags, empty ones left to the defaults."""
    return p.parse_args(drop_empty(glue_values(argv, p), p))


def optional_path(value: str) -> Path | None:
    """An optional workspace arrives as an empty string when unbound."""
    return Path(value) if value.strip() else None


def artifacts_dir(source: Path) -> Path:
    d = source / ARTIFACTS
    d.mkdir(parents=True, exist_ok=True)
    return d


def clear_records(source: Path) -> None:
    """Empty ``artifacts/`` at the start of a run (git-clone, the first task of every catalog
    pipeline, with ``--delete-existing``).

    A reused ``source`` (a PVC bound by claim name, a ``--workspace`` folder) still holds the
    records of the last run; a report would summarise them as this run's whenever a step of
    this run fails before it records. Clearing at the start, rather than tagging records with
    the run's name, keeps the step contract engine-free: no task needs to be told its run.
    """
    from taskyard._os import empty_dir

    folder = source / ARTIFACTS
    if folder.is_dir() and not folder.is_symlink():
        empty_dir(folder)


def record_bytes(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True, default=str) + "\n").encode()


def write_record(source: Path, step: str, record: dict[str, Any]) -> Path:
    """Leave ``artifacts/<step>.json`` so the report task can summarise on every engine."""
    path = artifacts_dir(source) / f"{step}.json"
    path.write_bytes(record_bytes(record))
    return path


def glue_values(argv: list[str], p: argparse.ArgumentParser) -> list[str]:
    """Join ``--flag VALUE`` into ``--flag=VALUE`` for every flag that takes a value.

    Engines pass each param as a separate arg; argparse would take a value such as ``-x`` or
    ``--lf`` (free-form pytest args) for an unknown flag.
    """
    takes_value = {s for a in p._actions if a.nargs != 0 for s in a.option_strings}
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in takes_value and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


class Terminated(KeyboardInterrupt):
    """SIGTERM as an exception, so ``finally`` and ``except BaseException`` blocks clean up.

    Engines stop a step with SIGTERM (Tekton/Argo on pod deletion, the local runner on a
    timeout, on Ctrl-C, or when the runner itself dies: parent-death signal). Python's default
    would end the process on the spot and skip every rollback.
    """


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup
    raise Terminated()


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back for a cleanup (a rollback) that must not be cut in half;
    one that arrived meanwhile is delivered when the block ends."""
    held = {signal.SIGTERM, signal.SIGINT}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _stop_own_group() -> None:
    """A step leading its process group takes its children (pytest, git) with it."""
    if os.getpgrp() != os.getpid():
        return  # started by hand from a shell: the group is not ours to signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.killpg(os.getpgrp(), signal.SIGTERM)


def main(
    run: Callable[[argparse.Namespace], Any],
    p: argparse.ArgumentParser,
    preflight: Callable[[], None] | None = None,
) -> None:
    """Parse, run, and turn expected failures into one line on stderr and exit 1.

    ``preflight`` checks the environment before the step does anything (the ML steps: a
    tracking URI on a cluster).
    """
    args = parse_args(p, sys.argv[1:])
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if preflight is not None:
            preflight()
        run(args)
    except TaskyardError as e:
        if args.debug or os.environ.get("TASKYARD_DEBUG"):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Terminated:
        print("error: terminated (SIGTERM)", file=sys.stderr)
        _stop_own_group()
        sys.exit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
