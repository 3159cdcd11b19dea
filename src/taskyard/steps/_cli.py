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
    """Parse the string booleans params carry ("true"/"false", as Tekton does)."""
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def optional_path(value: str) -> Path | None:
    """An optional workspace arrives as an empty string when unbound."""
    return Path(value) if value.strip() else None


def artifacts_dir(source: Path) -> Path:
    d = source / ARTIFACTS
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_record(source: Path, step: str, record: dict[str, Any]) -> Path:
    """Leave ``artifacts/<step>.json`` so the report task can summarise on every engine."""
    path = artifacts_dir(source) / f"{step}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
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


def main(run: Callable[[argparse.Namespace], None], p: argparse.ArgumentParser) -> None:
    """Parse, run, and turn expected failures into one line on stderr and exit 1."""
    args = p.parse_args(glue_values(sys.argv[1:], p))
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
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
