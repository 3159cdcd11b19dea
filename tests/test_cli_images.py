"""``taskyard images build --project DIR``: the command line around images.build_project_image.

Building needs Docker (tests/test_images.py starts its own daemon); here only what the CLI
decides before any build: bad combinations are one ``error:`` line and exit 2.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cliutil import taskyard


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--project", "{tmp}/nope"], "--project {tmp}/nope: not a folder"),
        (["--project", "{tmp}", "train"], "drop NAME"),
        (["--project", "{tmp}", "--debootstrap"], "drop --debootstrap"),
        (["--project", "{tmp}", "--base", "python:3.12"], "drop --base"),
        (["--tag", "x/y:1"], "--tag is for --project"),
    ],
)
def test_project_image_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TASKYARD_BASE_IMAGE"}
    env["TASKYARD_HOME"] = str(tmp_path / "home")
    r = taskyard("images", "build", *(a.format(tmp=tmp_path) for a in args), env=env)
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and message.format(tmp=tmp_path) in line, line


def test_the_flag_is_documented() -> None:
    r = taskyard("images", "build", "--help")
    assert r.returncode == 0 and "--project DIR" in r.stdout and "--tag TAG" in r.stdout
