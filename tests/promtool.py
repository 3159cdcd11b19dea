"""Debian's ``promtool`` (package ``prometheus``) and ``amtool`` (``prometheus-alertmanager``),
which ``make test`` installs as root. Outside CI a missing tool skips with the reason; in CI
(``CI`` set) it fails instead, so the rule and config checks can never silently stop running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}


def require(name: str) -> str:
    """The path of ``promtool`` or ``amtool``; skips (fails in CI) when it is not installed."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
    if found:
        return found
    why = f"{name} not installed (Debian's {PACKAGES[name]}; `make test` installs it as root)"
    if os.environ.get("CI"):
        pytest.fail(f"{why}: CI must run these checks")
    pytest.skip(why)


def run(name: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``name args…``, output captured as text, never raising on a non-zero exit."""
    return subprocess.run(
        [require(name), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        # amtool reads ~/.config/amtool/config.yml: a scratch HOME keeps a user's out.
        env={**os.environ, "HOME": str(cwd)} if cwd else None,
    )


def ok(name: str, *args: str | Path, cwd: Path | None = None) -> str:
    """Runs it and asserts a zero exit; returns stdout + stderr."""
    proc = run(name, *args, cwd=cwd)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, (
        f"{name} {' '.join(map(str, args))} exited {proc.returncode}:\n{out}"
    )
    return out
