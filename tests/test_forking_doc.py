"""docs/forking.md's example, as written: its step and pipeline files run and render for real."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import schemas
from tests.gitutil import Remote

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "forking.md"
TASKYARD = str(Path(sys.executable).parent / "taskyard")


def doc_files() -> dict[str, str]:
    """``<!-- file: PATH -->`` followed by a fenced block: PATH -> the block's text."""
    found = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)\n```", DOC.read_text(), re.S)
    return {path: text + "\n" for path, text in found}


@pytest.fixture
def fork(tmp_path: Path) -> tuple[Path, Remote, dict[str, str]]:
    files = doc_files()
    assert set(files) == {"ci/check_data.py", "my_pipeline.py"}
    rows = "\n".join(["x,y"] + [f"{i},{i % 2}" for i in range(150)]) + "\n"
    remote = Remote.create(
        tmp_path / "churn",
        {
            "ci/check_data.py": files["ci/check_data.py"],
            "data/train.csv": rows,
            "tests/test_ok.py": "def test_ok():\n    assert True\n",
        },
    )
    here = tmp_path / "fork"
    here.mkdir()
    (here / "my_pipeline.py").write_text(files["my_pipeline.py"])
    env = {
        k: v for k, v in os.environ.items() if k not in ("TASKYARD_DEBUG", "MLFLOW_TRACKING_URI")
    }
    env.update(TASKYARD_HOME=str(tmp_path / "home"), COLUMNS="200")
    return here, remote, env


def ty(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TASKYARD, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_fork_runs_and_its_check_fails_clearly(fork) -> None:
    here, remote, env = fork
    url = ["-p", f"repo-url={remote.url}", "-p", "allow-file-url=true"]
    r = ty(here, env, "run", "my_pipeline.py:PIPELINE", *url)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert "rows = 150" in r.stdout and "tests-passed = 1" in r.stdout
    r = ty(here, env, "run", "my_pipeline.py:PIPELINE", *url, "-p", "min-rows=500")
    assert r.returncode == 1
    assert r.stderr.strip().endswith(
        "task 'check-data' failed: train.csv has 150 rows, fewer than 500"
    ), r.stderr
    shown = ty(here, env, "pipelines", "my_pipeline.py:PIPELINE")
    assert shown.returncode == 0 and "check-data" in shown.stdout


def test_the_fork_renders_for_a_cluster(fork) -> None:
    here, _remote, env = fork
    repo = "https://github.com/acme/churn-model.git"
    r = ty(here, env, "render", "--pipeline", "my_pipeline.py:PIPELINE", "--repo-url", repo,
           "--out", "deploy/")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = here / "deploy"
    (task,) = yaml.safe_load_all((out / "tasks/check-data/0.1/check-data.yaml").read_text())
    strict = schemas.strict_validator(schemas.schema_path("tekton-v1.15.0/v1-openapiv3/Task.json"))
    assert schemas.errors(strict, task) == []
    assert task["spec"]["steps"][0]["command"] == [
        "python",
        "$(workspaces.source.path)/repo/ci/check_data.py",
    ]
    (wt,) = yaml.safe_load_all((out / "argo/checked-ci.yaml").read_text())
    argo = schemas.strict_validator(
        schemas.schema_path("argo-workflows-v4.1.2/schema.json"),
        "io.argoproj.workflow.v1alpha1.WorkflowTemplate",
    )
    assert schemas.errors(argo, wt) == []
    assert repo in (out / "triggers/tekton/templates.yaml").read_text()
