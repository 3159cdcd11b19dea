"""The main job end to end, through the real CLI: real git, pytest, MLflow, sklearn/xgboost/torch.

These are the issue's acceptance checks: a first run promotes and serves, a worse model is
refused, a failing test stops the pipeline before training, bad input fails with one line, and
every framework goes through the same pipeline.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from taskyard import deployments
from taskyard.demo import publish
from taskyard.run.store import RunRecord, RunStore
from tests.cliutil import latest_run, taskyard

MODEL = "wine-classifier"


@pytest.fixture
def home(ml_home: Path) -> Path:
    return ml_home


def states(run: RunRecord) -> dict[str, str]:
    return {name: t.state for name, t in run.tasks.items()}


def registry():
    from mlflow import MlflowClient

    return MlflowClient()


@pytest.mark.slow
def test_main_job_promotes_then_refuses_a_worse_model(home: Path) -> None:
    first = taskyard("demo", "-p", "keep-serving=false")
    out = first.stdout
    assert first.returncode == 0, out + first.stderr
    run = latest_run()
    commit = run.tasks["clone"].results["commit"]
    assert len(commit) == 40
    for needle in (
        f"commit = {commit}",
        "tests-passed = 6",
        "metric-name = f1_macro",
        "promote = true",
        "model-version = 1",
        'smoke-prediction = {"predictions": [',
    ):
        assert needle in out, f"{needle!r} missing from the summary:\n{out}"
    assert set(states(run).values()) == {"Succeeded"}
    assert str(registry().get_model_version_by_alias(MODEL, "champion").version) == "1"
    summary = (run.path / "workspaces" / "source" / "artifacts" / "summary.md").read_text()
    assert commit[:12] in summary
    assert deployments.list_deployments() == []  # keep-serving=false stopped the server

    worse = taskyard(
        "demo", "-p", "keep-serving=false", "-p", "overrides=n_estimators=1,max_depth=1"
    )
    assert worse.returncode == 0, worse.stdout + worse.stderr
    run = latest_run()
    assert run.tasks["evaluate"].results["promote"] == "false"
    assert states(run)["promote"] == "Skipped"
    assert states(run)["deploy"] == "Skipped"
    assert states(run)["report"] == "Succeeded"
    assert "promote = false" in worse.stdout
    client = registry()
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")] == ["1"]


@pytest.mark.slow
def test_a_failing_test_stops_the_pipeline_before_training(home: Path, tmp_path: Path) -> None:
    failing = "def test_cultivars_are_four():\n    assert 3 == 4\n"
    url, commit = publish(
        root=tmp_path / "remote", files={"tests/test_broken.py": failing}, message="Break a test"
    )
    proc = taskyard(
        "run", "train-eval-deploy",
        "-p", f"repo-url={url}", "-p", f"revision={commit}", "-p", "allow-file-url=true",
    )  # fmt: skip
    assert proc.returncode == 1
    run = latest_run()
    assert states(run) == {
        "clone": "Succeeded",
        "test": "Failed",
        "train": "Skipped",
        "evaluate": "Skipped",
        "promote": "Skipped",
        "deploy": "Skipped",
        "report": "Succeeded",
    }
    assert "1 of 7 tests failed: test_cultivars_are_four" in run.tasks["test"].reason
    assert "1 of 7 tests failed" in proc.stdout
    client = registry()
    assert client.search_registered_models() == []
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


@pytest.mark.slow
def test_bad_url_and_unknown_revision_fail_the_clone_with_one_line(home: Path) -> None:
    proc = taskyard(
        "run", "ci", "-p", f"repo-url=file://{home}/no-such-repo.git", "-p", "allow-file-url=true"
    )  # fmt: skip
    assert proc.returncode == 1
    reason = latest_run().tasks["clone"].reason
    assert reason.startswith("cannot clone file://"), reason
    assert "\n" not in reason and "Traceback" not in proc.stdout + proc.stderr

    url, _ = publish(root=home / "remote")
    proc = taskyard(
        "run", "ci",
        "-p", f"repo-url={url}", "-p", "revision=no-such-branch", "-p", "allow-file-url=true",
    )  # fmt: skip
    assert proc.returncode == 1
    reason = latest_run().tasks["clone"].reason
    assert reason.startswith(f"revision 'no-such-branch' not found in {url}"), reason


def test_unknown_pipeline_and_param_fail_with_one_line(home: Path) -> None:
    proc = taskyard("run", "train-eval-deplo")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown pipeline 'train-eval-deplo' (did you mean 'train-eval-deploy'?)"
    ]
    proc = taskyard("run", "ci", "-p", "repo-url=x", "-p", "bogus=1")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: unknown param 'bogus' for pipeline 'ci'")
    assert RunStore().list() == []  # nothing was started


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["xgboost", "torch"])
def test_every_framework_trains_and_promotes_through_the_same_pipeline(
    home: Path, framework: str
) -> None:
    url, commit = publish(root=home / "remote")
    proc = taskyard(
        "run",
        "train-eval-deploy",
        "-p", f"repo-url={url}",
        "-p", f"revision={commit}",
        "-p", "allow-file-url=true",
        "-p", f"config=configs/{framework}.toml",
        "-p", "keep-serving=false",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = latest_run()
    assert set(states(run).values()) == {"Succeeded"}
    assert run.results["promote"] == "true"
    assert run.results["smoke-prediction"].startswith('{"predictions": [')
    version = registry().get_model_version_by_alias(MODEL, "champion")
    source_run = registry().get_run(version.run_id)
    assert source_run.data.tags["taskyard.framework"] == framework


@pytest.mark.slow
def test_a_kept_warm_interpreter_runs_the_next_run_and_forks_the_model_server(
    home: Path,
) -> None:
    """TASKYARD_WARM_IDLE > 0 (the default outside tests): the model server deploy starts is
    forked from the kept helper, outlives it, and is stopped as a recorded server; the next
    run of the same commit replays tests, train and evaluate from the same helper."""
    import os
    import time
    import urllib.request

    from taskyard.run.warm import kept, stop_kept

    env = {**os.environ, "TASKYARD_WARM_IDLE": "120"}
    try:
        first = taskyard("demo", env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        found = kept(home)
        assert found is not None, "no helper was kept for the home"
        (dep,) = deployments.list_deployments()
        assert dep.cmdline[1:3] == ["-m", "taskyard.run.warm"], dep.cmdline  # forked
        assert deployments.alive(dep) and dep.start_ticks > 0
        with urllib.request.urlopen(dep.url + "/health", timeout=10) as r:
            assert r.status == 200
        assert 'smoke-prediction = {"predictions": [' in first.stdout

        # the same commit again: everything heavy replays, every step from the same helper
        for _ in range(2):
            again = taskyard("demo", env=env)
            assert again.returncode == 0, again.stdout + again.stderr
        run = latest_run()
        assert {n for n, t in run.tasks.items() if t.results.get("cached-from")} == {
            "test", "train", "evaluate",
        }  # fmt: skip
        assert kept(home) == found

        # the server outlives the helper, and stops as any recorded server does
        assert stop_kept(home) == found[1]
        deadline = time.monotonic() + 10
        while deployments._cmdline(found[1]) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert deployments.alive(dep), "the model server died with the warm interpreter"
        assert deployments.stop_deployment(dep)
        assert not deployments.alive(dep)
    finally:
        stop_kept(home)
