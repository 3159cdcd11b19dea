"""A project inside a monorepo (`subdirectory`), and a project without tests (`allow-no-tests`).

Real git remotes, the real pipeline through the CLI, real pytest and MLflow. The repository
holds the example under ``projects/fare/`` next to an unrelated folder whose test would fail if
pytest were rooted at the repository, and no ``taskyard.toml`` at the top.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskyard.catalog import PIPELINES
from taskyard.demo import examples_dir
from taskyard.run.store import RunRecord
from tests.cliutil import latest_run, taskyard
from tests.gitutil import Remote

MODEL = "wine-classifier"
PROJECT = "projects/fare"
UNRELATED = {
    "README.md": "# A monorepo: the model lives in projects/fare\n",
    "web/app.py": "print('not the model')\n",
    # Collected only if pytest ran at the repository root instead of the project's folder.
    "web/test_web.py": "def test_web_is_not_collected():\n    assert False, 'wrong root'\n",
}


def example_files(prefix: str, *, with_tests: bool = True) -> dict[str, str]:
    root = examples_dir() / "wine-classifier"
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or {"__pycache__", ".pytest_cache", "build"} & set(rel.parts):
            continue
        if not with_tests and rel.parts[0] == "tests":
            continue
        files[f"{prefix}/{rel.as_posix()}"] = path.read_text()
    return files


@pytest.fixture
def home(ml_home: Path) -> Path:
    return ml_home


def states(run: RunRecord) -> dict[str, str]:
    return {name: t.state for name, t in run.tasks.items()}


def run_pipeline(remote: Remote, *params: str) -> tuple[int, str, RunRecord]:
    argv = ["run", "train-eval-deploy", "-p", f"repo-url={remote.url}", "-p",
            "allow-file-url=true", "-p", "keep-serving=false"]  # fmt: skip
    for p in params:
        argv += ["-p", p]
    proc = taskyard(*argv)
    return proc.returncode, proc.stdout + proc.stderr, latest_run()


def test_the_pipelines_take_subdirectory_and_allow_no_tests() -> None:
    for name in ("train-eval-deploy", "train-eval-deploy-gpu", "retrain", "ci"):
        spec = PIPELINES[name]
        params = {p.name: p for p in spec.params}
        assert params["subdirectory"].default == "", name
        assert "monorepo" in params["subdirectory"].description
        folders = {
            pt.name: pt.params["subdirectory"]
            for pt in spec.tasks
            if pt.task.name != "git-clone" and "subdirectory" in pt.params
        }
        expected = {"test", "train", "evaluate", "promote"} & {t.name for t in spec.tasks}
        assert folders.keys() == expected, name
        assert set(folders.values()) == {"repo/$(params.subdirectory)"}, name
        if name != "retrain":
            assert params["allow-no-tests"].type == "boolean"
            assert params["allow-no-tests"].default == "false"
            test = next(t for t in spec.tasks if t.name == "test")
            assert test.params["allow-no-tests"] == "$(params.allow-no-tests)"


@pytest.mark.slow
def test_a_project_in_a_monorepo_trains_evaluates_and_deploys(home: Path, tmp_path: Path) -> None:
    remote = Remote.create(tmp_path / "mono", {**UNRELATED, **example_files(PROJECT)})
    code, out, run = run_pipeline(remote, f"subdirectory={PROJECT}")
    assert code == 0, out
    assert set(states(run).values()) == {"Succeeded"}, states(run)
    assert run.tasks["test"].results["passed"] == "6"  # the project's tests, not web/'s
    assert run.tasks["evaluate"].results["promote"] == "true"
    assert run.tasks["promote"].results["model-version"] == "1"
    assert run.tasks["deploy"].results["smoke-prediction"].startswith('{"predictions": [')
    artifacts = run.path / "workspaces" / "source" / "artifacts"
    record = json.loads((artifacts / "run-tests.json").read_text())
    assert record["subdirectory"] == f"repo/{PROJECT}"
    train = json.loads((artifacts / "train.json").read_text())
    assert train["results"]["model-name"] == MODEL

    # Without the param, pytest runs at the repository root: web/'s test is collected, fails.
    code, out, run = run_pipeline(remote)
    assert code == 1
    assert states(run)["test"] == "Failed" and states(run)["train"] == "Skipped"


@pytest.mark.slow
def test_a_project_without_tests_needs_allow_no_tests(home: Path, tmp_path: Path) -> None:
    files = example_files(PROJECT, with_tests=False)
    remote = Remote.create(tmp_path / "untested", {"README.md": "# no tests\n", **files})
    code, out, run = run_pipeline(remote, f"subdirectory={PROJECT}")
    assert code == 1
    assert states(run)["test"] == "Failed"
    assert states(run)["train"] == "Skipped"
    reason = run.tasks["test"].reason
    assert reason.startswith("no tests collected in "), reason
    assert reason.endswith(f"{PROJECT} (add tests, or set the param allow-no-tests=true "
                           "to let a project without tests pass)"), reason  # fmt: skip
    assert "allow-no-tests=true" in out  # the run table shows the reason

    code, out, run = run_pipeline(remote, f"subdirectory={PROJECT}", "allow-no-tests=true")
    assert code == 0, out
    assert set(states(run).values()) == {"Succeeded"}, states(run)
    assert run.tasks["test"].results == {
        "passed": "0",
        "failed": "0",
        "report": "artifacts/junit.xml",
        "cached-from": "",  # computed: this commit ran no tests before
    }
    record = json.loads(
        (run.path / "workspaces" / "source" / "artifacts" / "run-tests.json").read_text()
    )
    assert (record["status"], record["no_tests"]) == ("no-tests", True)
    assert run.tasks["promote"].results["promoted"] == "true"
