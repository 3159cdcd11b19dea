"""Runs the pinned ``@ibm/tekton-lint`` (tools/tekton-lint, installed by ``make test``).

Outside CI a missing install skips with the reason; in CI (``CI`` set) it fails instead, so
the lint can never silently stop running there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "tekton-lint"
BIN = TOOL / "node_modules" / ".bin" / "tekton-lint"
GLOBS = ("tasks/**/*.yaml", "pipelines/**/*.yaml")


def require() -> Path:
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed"
    elif not BIN.exists():
        missing = f"{BIN.relative_to(ROOT)} missing: run `make test` (npm ci in {TOOL.name})"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"tekton-lint unavailable in CI: {missing}")
        pytest.skip(f"tekton-lint unavailable: {missing}")
    return BIN


def lint(root: Path, scratch: Path) -> list[dict[str, Any]]:
    """Every problem (errors and warnings) tekton-lint reports on ``root``'s Tekton files.

    ``--config`` points at an empty folder so the default rules apply (no rc file can turn
    one off), and the cache of external tasks lives in ``scratch``, not in ``~``.
    """
    binary = require()
    config = scratch / "tekton-lint-config"
    config.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TL_CACHE_DIR": str(scratch / "tekton-lint-cache")}
    proc = subprocess.run(
        [str(binary), "--config", str(config), "--format", "json", "--color", "false", *GLOBS],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout.strip()
    start = out.find("[")
    if start < 0:
        raise AssertionError(f"tekton-lint gave no JSON (rc {proc.returncode}): {proc.stderr}")
    return json.loads(out[start:])


def wrong_report(problem: dict[str, Any]) -> bool:
    """tekton-lint 1.1.0 reads `$(tasks.T.results.R[*])` as a result named `R[*]`; that is
    Tekton's reference to all of a matrixed task's results (tektoncd/pipeline docs/matrix.md,
    "Results from fanned out Matrixed PipelineTasks"), the sweep's select-best input."""
    return problem["rule"] == "no-undefined-result" and "[*]' is not a result" in problem["message"]
