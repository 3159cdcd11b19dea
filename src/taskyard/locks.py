"""One lock per registered model on this machine, held by promote and by deploy.

Why: both read an alias and then act on it (move ``champion``, serve a version, roll back). Two
runs doing that at once could promote the worse model or serve a version that is no longer
champion. ``flock`` works across processes and across the docker executor's containers (the
lock file lives in the deployments folder, which is bind-mounted at the same path), and the
kernel drops it when its holder dies, so a killed step never leaves it stuck.

On a cluster every task runs in its own pod and this file lock guards nothing; what guards the
registry there is the compare-and-set itself: promote moves ``champion`` only while it still
points at the version the candidate was judged against (see ``steps/promote.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from taskyard.errors import StepError
from taskyard.home import deployments_dir

LOCK = ".lock"


def slug(name: str) -> str:
    """A registered model name as a folder name (names may hold '/', spaces...)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    if not s:
        raise StepError(f"cannot use {name!r} as a model folder name")
    return s


def model_folder(name: str) -> Path:
    return deployments_dir() / slug(name)


@contextlib.contextmanager
def model_lock(name: str, holder: str) -> Iterator[None]:
    """Hold the model's lock; say who we wait for when another process has it."""
    folder = model_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            other = fh.read().strip() or "another process"
            print(f"waiting for the lock on model {name!r} held by {other}", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{holder} (pid {os.getpid()})\n")
            fh.flush()
            yield
        finally:
            with contextlib.suppress(OSError):
                fh.seek(0)
                fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
