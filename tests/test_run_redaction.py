"""A clone URL with ``user:password@``: the step gets the secret, no file or output keeps it.

The ``ci`` pipeline (clone -> run-tests -> report) runs as ``taskyard run`` against a real
smart-HTTP git server that demands basic auth, so a successful clone proves the step received
the real password. Then every file under the taskyard home (run folder, workspace with the
clone's .git, logs, results) and every CLI output is searched for the password's bytes.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gitutil import GitHttpServer, Remote

ROOT = Path(__file__).resolve().parents[1]
TASKYARD = str(Path(sys.executable).parent / "taskyard")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = dict(os.environ)
    out["TASKYARD_HOME"] = str(tmp_path / "home")
    out.pop("MLFLOW_TRACKING_URI", None)
    out.pop("TASKYARD_DEBUG", None)
    out["COLUMNS"] = "200"
    return out


def ty(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TASKYARD, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_password_in_the_clone_url_lands_in_no_file_and_no_output(
    tmp_path: Path, env: dict[str, str]
) -> None:
    password = "pw-" + secrets.token_hex(12)
    served = tmp_path / "served"
    project = Remote.create(
        served / "project", {"tests/test_ok.py": "def test_ok():\n    assert True\n"}
    )
    outputs: list[str] = []
    with GitHttpServer(served, user="u", password=password) as http:
        url = http.url(project.bare).replace("://", f"://u:{password}@")
        ok = ty(env, "run", "ci", "-p", f"repo-url={url}")
        outputs += [ok.stdout, ok.stderr]
        assert ok.returncode == 0, ok.stdout + ok.stderr
        bad = ty(env, "run", "ci", "-p", f"repo-url={url}", "-p", "revision=no-such-branch")
        outputs += [bad.stdout, bad.stderr]
        assert bad.returncode == 1
    home = Path(env["TASKYARD_HOME"])
    runs = sorted((home / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        for args in (
            ["runs"],
            ["runs", "show", run.name],
            ["runs", "show", run.name, "--log", "clone"],
        ):
            shown = ty(env, *args)
            assert shown.returncode == 0, shown.stderr
            outputs += [shown.stdout, shown.stderr]
    # The clone really happened with the real password, and the outputs say so redacted.
    ok_run = next(r for r in runs if (r / "workspaces/source/repo/tests/test_ok.py").is_file())
    assert (ok_run / "workspaces/source/repo/.git/config").is_file()
    assert "param repo-url = http://***@127.0.0.1:" in "".join(outputs)
    assert "error: run ci-" in bad.stderr and "failed: task 'clone' failed: revision" in bad.stderr
    assert "http://***@127.0.0.1:" in bad.stderr

    for text in outputs:
        assert password not in text
    leaks = [p for p in home.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert leaks == []
    assert sum(1 for p in home.rglob("*") if p.is_file()) > 20  # the walk saw the clone too
