"""The main job: the bundled example project as a real git remote, run through the pipeline.

Nothing is faked: the example is committed into a local bare repository under the taskyard home
and the pipeline clones it through the ``git-clone`` step like any other remote (with the
pipeline param ``allow-file-url=true``: git-clone refuses ``file://`` URLs by default).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from taskyard._os import empty_dir
from taskyard.errors import RunError
from taskyard.home import home

EXAMPLE = "wine-classifier"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "artifacts", "mlruns")
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "taskyard demo",
    "GIT_AUTHOR_EMAIL": "demo@taskyard.invalid",
    "GIT_COMMITTER_NAME": "taskyard demo",
    "GIT_COMMITTER_EMAIL": "demo@taskyard.invalid",
}


def examples_dir() -> Path:
    """The ``examples/`` folder of the source checkout this package runs from."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "examples"
        if (candidate / EXAMPLE / "taskyard.toml").is_file():
            return candidate
    raise RunError(
        "the bundled example project was not found",
        "the demo runs from a source checkout: git clone the taskyard repository",
    )


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV}
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        raise RunError(f"git {args[0]} failed in {cwd}: {reason[-1] if reason else '?'}")
    return proc.stdout.strip()


def publish(
    example: str = EXAMPLE,
    root: Path | None = None,
    files: dict[str, str] | None = None,
    message: str = "Update the example project",
) -> tuple[str, str]:
    """Commit the example (plus ``files`` overrides) to a bare remote; return (url, commit).

    Re-publishing unchanged content makes no new commit, so repeated demo runs train the same
    commit and the second run meets the first run's champion.
    """
    root = root or home() / "demo"
    bare = root / f"{example}.git"
    work = root / f"{example}-checkout"
    if not bare.exists():
        bare.mkdir(parents=True)
        _git(bare, "init", "--bare", "--initial-branch=main", "-q")
    if not (work / ".git").exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        _git(work, "init", "--initial-branch=main", "-q")
        _git(work, "remote", "add", "origin", bare.as_uri())
    empty_dir(work, keep=(".git",))  # the checkout is rebuilt from the example each time
    shutil.copytree(examples_dir() / example, work, dirs_exist_ok=True, ignore=_IGNORE)
    for rel, text in (files or {}).items():
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    _git(work, "add", "-A")
    if _git(work, "status", "--porcelain"):
        _git(work, "commit", "-q", "-m", message)
        _git(work, "push", "-q", "origin", "HEAD:main")
    return bare.as_uri(), _git(work, "rev-parse", "HEAD")
