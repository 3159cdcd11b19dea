"""What every step CLI shares: flag parsing helpers, one-line errors, step records."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable
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


def main(run: Callable[[argparse.Namespace], None], p: argparse.ArgumentParser) -> None:
    """Parse, run, and turn expected failures into one line on stderr and exit 1."""
    args = p.parse_args()
    try:
        run(args)
    except TaskyardError as e:
        if args.debug or os.environ.get("TASKYARD_DEBUG"):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
