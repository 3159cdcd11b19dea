"""The real ``taskyard`` CLI in a child process, and the run it leaves behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from taskyard.run.store import RunRecord, RunStore


def taskyard(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskyard.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def latest_run(home: Path | None = None) -> RunRecord:
    """The newest run under ``home`` (default: the current taskyard home)."""
    return RunStore(home / "runs" if home else None).list()[0]
