"""Small OS helpers shared by the runner, the steps and the deployment manager."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process exists (signal 0); a process we may not signal still counts."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def empty_dir(target: Path, keep: tuple[str, ...] = ()) -> None:
    """Delete what is inside ``target`` but the names in ``keep``; symlinks are not followed."""
    if not target.is_dir():
        return
    for entry in target.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
