"""A fork's own failing step shows its own error line in the run table, not only its exit code.

The pipelines are defined here, as a team's fork would define them, and run by the real
``taskyard run tests/test_run_errors.py:ATTR``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from taskyard.spec import PipelineSpec, PipelineTask, TaskSpec
from tests.cliutil import taskyard

ROOT = Path(__file__).resolve().parents[1]
HERE = "tests/test_run_errors.py"


def _step(name: str, code: str) -> PipelineTask:
    task = TaskSpec(
        name=name,
        display_name=name,
        description="A step of the fork's own that fails its own way.",
        image="python:3.11-slim",
        command=("python", "-c", code),
    )
    return PipelineTask(name=name, task=task)


# Each task fails differently; none prints the contract's `error: …` line.
FAILURES = PipelineSpec(
    name="own-failures",
    display_name="own failures",
    description="Custom steps that fail.",
    tasks=(
        _step("traceback", "print('loading'); import json; json.loads('{oops')"),
        _step("custom-exception", "class BoomError(Exception): pass\nraise BoomError('boom')"),
        _step(
            "tool-error",
            "import sys; print('Error: input.csv is empty', file=sys.stderr); sys.exit(3)",
        ),
        _step("quiet", "print('step 1 of 2 done'); raise SystemExit(4)"),
    ),
)
CONTRACT = PipelineSpec(
    name="own-contract",
    display_name="contract first",
    description="A traceback after the step's own error line: the error line wins.",
    tasks=(
        _step(
            "both",
            "import sys; print('error: model file missing', file=sys.stderr, flush=True); "
            "raise RuntimeError('later')",
        ),
    ),
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k != "TASKYARD_DEBUG"},
        "TASKYARD_HOME": str(tmp_path / "home"),
        "COLUMNS": "200",
    }


def _record(env: dict[str, str]) -> dict:
    (path,) = (Path(env["TASKYARD_HOME"]) / "runs").glob("*/run.json")
    return json.loads(path.read_text())


def test_the_run_table_shows_each_steps_own_error(env: dict[str, str]) -> None:
    r = taskyard("run", f"{HERE}:FAILURES", env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    reasons = {name: t["reason"] for name, t in _record(env)["tasks"].items()}
    assert reasons == {
        "traceback": "json.decoder.JSONDecodeError: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)",
        "custom-exception": "BoomError: boom",
        "tool-error": "Error: input.csv is empty",
        "quiet": "exit code 4",  # a progress line is not an error: the exit code says it
    }
    for reason in reasons.values():
        assert reason in r.stdout  # the run table
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: run ") and "JSONDecodeError" in line and "(and 3 more)" in line


def test_the_contract_line_wins_over_a_later_traceback(env: dict[str, str]) -> None:
    r = taskyard("run", f"{HERE}:CONTRACT", env=env, timeout=120)
    assert r.returncode == 1
    assert _record(env)["tasks"]["both"]["reason"] == "model file missing"
    assert r.stderr.strip().endswith("task 'both' failed: model file missing")
