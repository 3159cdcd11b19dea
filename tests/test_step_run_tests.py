"""run-tests runs a real pytest on tiny projects and reads the JUnit report it leaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from taskyard.steps._cli import glue_values
from taskyard.steps.run_tests import build_parser, parse_junit

PASSING = """
import pytest

def test_add():
    assert 1 + 1 == 2

def test_fast_upper():
    assert "a".upper() == "A"

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass
"""
FAILING = """
def test_ok():
    assert True

def test_a():
    assert 1 == 2

class TestB:
    def test_b(self):
        raise ValueError("boom")
"""


def project(ws: Path, files: dict[str, str], sub: str = "repo") -> Path:
    root = ws / sub
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\ntestpaths = ['tests']\n")
    for name, text in files.items():
        (root / "tests" / name).write_text(text)
    return root


def run_step(ws: Path, tmp_path: Path, **params: str) -> subprocess.CompletedProcess[str]:
    values = {
        "subdirectory": "repo",
        "pytest-args": "",
        "report": "artifacts/junit.xml",
        "allow-no-tests": "false",
    }
    values.update({k.replace("_", "-"): v for k, v in params.items()})
    args = ["--source", str(ws)]
    for name, value in values.items():
        args += [f"--{name}", value]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TASKYARD_"))}
    env["TASKYARD_HOME"] = str(tmp_path / "home")
    for result in ("passed", "failed", "report"):
        env[f"TASKYARD_RESULT_{result.upper()}"] = str(tmp_path / "results" / result)
    return subprocess.run(
        [sys.executable, "-m", "taskyard.steps.run_tests", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def results(tmp_path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (tmp_path / "results").iterdir()}


def record(ws: Path) -> dict:
    return json.loads((ws / "artifacts" / "run-tests.json").read_text())


def test_passing_project(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    project(ws, {"test_math.py": PASSING})
    proc = run_step(ws, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed, 1 skipped" in proc.stdout  # pytest's own output is streamed to stdout
    assert results(tmp_path) == {"passed": "2", "failed": "0", "report": "artifacts/junit.xml"}
    assert (ws / "artifacts" / "junit.xml").is_file()
    rec = record(ws)
    assert rec["results"] == results(tmp_path)
    assert (rec["passed"], rec["failed"], rec["skipped"], rec["total"]) == (2, 0, 1, 3)
    assert rec["status"] == "passed"
    assert rec["failed_tests"] == []
    assert rec["duration"] >= 0


def test_failing_project_names_the_failures(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    project(ws, {"test_math.py": PASSING, "test_bad.py": FAILING})
    proc = run_step(ws, tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: 2 of 6 tests failed: test_a, test_b"
    assert "Traceback" not in proc.stderr
    assert "AssertionError" in proc.stdout or "assert 1 == 2" in proc.stdout
    assert results(tmp_path)["passed"] == "3"
    assert results(tmp_path)["failed"] == "2"
    rec = record(ws)
    assert rec["status"] == "failed"
    assert rec["failed_tests"] == ["tests.test_bad::test_a", "tests.test_bad.TestB::test_b"]


def test_no_tests_collected_fails_and_says_how_to_allow_it(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    project(ws, {"helpers.py": "X = 1\n"})
    proc = run_step(ws, tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"error: no tests collected in {ws / 'repo'} (add tests, or set the param "
        "allow-no-tests=true to let a project without tests pass)"
    )
    assert record(ws)["status"] == "no-tests"
    assert results(tmp_path)["passed"] == "0"


def test_allow_no_tests_passes_a_project_without_tests(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "repo").mkdir(parents=True)  # not even a tests folder
    proc = run_step(ws, tmp_path, allow_no_tests="true")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no tests collected" in proc.stdout and "allow-no-tests=true" in proc.stdout
    assert results(tmp_path) == {"passed": "0", "failed": "0", "report": "artifacts/junit.xml"}
    rec = record(ws)
    assert (rec["status"], rec["no_tests"], rec["allow_no_tests"], rec["total"]) == (
        "no-tests",
        True,
        True,
        0,
    )


def test_allow_no_tests_does_not_hide_failures(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    project(ws, {"test_bad.py": FAILING})
    proc = run_step(ws, tmp_path, allow_no_tests="true")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: 2 of 3 tests failed: test_a, test_b"


def test_allow_no_tests_takes_only_booleans(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    project(ws, {"test_math.py": PASSING})
    proc = run_step(ws, tmp_path, allow_no_tests="sometimes")
    assert proc.returncode == 2
    assert "expected true or false, got 'sometimes'" in proc.stderr


def test_pytest_args_filter_with_k(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    project(ws, {"test_math.py": PASSING, "test_bad.py": FAILING})
    proc = run_step(ws, tmp_path, pytest_args="-k 'fast or ok' -p no:cacheprovider")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results(tmp_path)["passed"] == "2"
    assert record(ws)["total"] == 2
    assert not (ws / "repo" / ".pytest_cache").exists()


def test_pytest_args_that_look_like_a_flag(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    project(ws, {"test_math.py": PASSING})
    proc = run_step(ws, tmp_path, pytest_args="-x")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_subdirectory_and_report_path(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    project(ws, {"test_math.py": PASSING}, sub="code/app")
    proc = run_step(ws, tmp_path, subdirectory="code/app", report="out/tests.xml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results(tmp_path)["report"] == "out/tests.xml"
    assert parse_junit(ws / "out" / "tests.xml").passed == 2


def test_subdirectory_with_the_pipelines_trailing_slash(tmp_path: Path) -> None:
    """The pipelines bind `repo/$(params.subdirectory)`: empty gives `repo/`."""
    ws = tmp_path / "ws"
    project(ws, {"test_math.py": PASSING}, sub="repo/projects/fare")
    proc = run_step(ws, tmp_path, subdirectory="repo/projects/fare/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    project(ws, {"test_math.py": PASSING}, sub="root/repo")
    proc = run_step(ws / "root", tmp_path, subdirectory="repo/")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_subdirectory_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    project(ws, {"test_math.py": PASSING})
    project(tmp_path, {"test_math.py": PASSING}, sub="elsewhere")
    proc = run_step(ws, tmp_path, subdirectory="repo/../../elsewhere")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: subdirectory 'repo/../../elsewhere' points outside the source workspace"
    )


def test_missing_project_folder(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    proc = run_step(ws, tmp_path, subdirectory="repo")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: project folder {ws / 'repo'} does not exist")


def test_usage_error_is_reported(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    project(ws, {"test_math.py": PASSING})
    proc = run_step(ws, tmp_path, pytest_args="--no-such-option")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: pytest stopped with exit code 4 (usage error)")


def test_bad_quoting_in_pytest_args(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    project(ws, {"test_math.py": PASSING})
    proc = run_step(ws, tmp_path, pytest_args="-k 'unclosed")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot split --pytest-args")


def test_values_that_look_like_flags_are_kept() -> None:
    argv = ["--source", "s", "--pytest-args", "-x", "--report", "r", "--debug"]
    glued = glue_values(argv, build_parser())
    assert glued == ["--source=s", "--pytest-args=-x", "--report=r", "--debug"]


PINNED_TEST = """
import shutil
import sys
import six

def test_the_projects_pin_is_imported():
    assert six.__version__ == "1.16.0"
    assert "/envs/" in sys.prefix  # pytest itself runs in the project's environment
    assert shutil.which("python").startswith(sys.prefix)  # and is activated for subprocesses
"""


def test_a_project_with_requirements_is_tested_in_its_own_env(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    root = project(ws, {"test_pinned.py": PINNED_TEST})
    (root / "requirements.txt").write_text("six==1.16.0\n")
    first = run_step(ws, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    env = record(ws)["environment"]
    assert env.startswith(str(tmp_path / "home" / "envs"))
    assert f"project environment {env} (requirements.txt): created in" in first.stdout
    assert f"+ {env}/bin/python -m pytest" in first.stdout
    assert results(tmp_path)["passed"] == "1"

    second = run_step(ws, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"project environment {env} (requirements.txt): reused" in second.stdout
    assert "created" not in second.stdout


def test_an_uninstallable_requirement_fails_with_pips_reason(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    root = project(ws, {"test_math.py": PASSING})
    (root / "requirements.txt").write_text("six==99.0.0\n")
    proc = run_step(ws, tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot install the project's requirements.txt: ")
    assert "six==99.0.0" in last
    assert not (ws / "artifacts" / "junit.xml").exists()  # pytest never ran
