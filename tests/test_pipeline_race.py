"""Two train-eval-deploy runs at once against one MLflow store (issue 10, done-means 1).

Whole pipelines through the real CLI, started together, each with another model quality. The
promote/deploy lock and promote's compare-and-set must leave the better model as ``champion``
and the one it replaced as ``previous-champion``, whichever run reaches promote first; each
run's deploy serves its own version or is skipped. Repeated, since the order varies: how far
apart the two runs reach evaluate depends on the machine, so one may promote before the other
evaluates (then the other is judged against it). The race where both are judged against no
champion and promote at once is forced step by step in tests/test_promotion_race.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from taskyard import deployments
from taskyard.demo import publish
from taskyard.run.store import RunStore

MODEL = "wine-classifier"
QUALITIES = {"good": "n_estimators=10,max_depth=2", "better": "n_estimators=20,max_depth=4"}


@pytest.fixture
def home(ml_home: Path) -> Path:
    return ml_home


@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2])
def test_two_concurrent_runs_leave_the_better_model_champion(home: Path, attempt: int) -> None:
    from mlflow import MlflowClient

    url, commit = publish()
    procs = {}
    for label, overrides in QUALITIES.items():
        argv = [
            sys.executable, "-m", "taskyard.cli", "run", "train-eval-deploy",
            "-p", f"repo-url={url}", "-p", f"revision={commit}", "-p", "allow-file-url=true",
            "-p", f"overrides={overrides}", "--run-id", f"race-{label}",
        ]  # fmt: skip
        procs[label] = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    logs = {label: p.communicate(timeout=900)[0] for label, p in procs.items()}
    assert {label: p.returncode for label, p in procs.items()} == {"good": 0, "better": 0}, logs

    runs = {label: RunStore().get(f"race-{label}") for label in QUALITIES}
    scores = {k: float(r.tasks["evaluate"].results["candidate-score"]) for k, r in runs.items()}
    assert scores["better"] > scores["good"]
    # How fast each run reaches evaluate varies, so three orders are possible, and each must end
    # with the better model champion: both evaluated against no champion (the race promote's
    # lock and compare-and-set settle), or one run promoted before the other evaluated.
    judged = {k: r.tasks["evaluate"].results for k, r in runs.items()}
    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL, "champion")
    better_version = runs["better"].tasks["promote"].results["model-version"]
    assert str(champion.version) == better_version  # the best evaluated version
    aliases = {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}
    if judged["good"]["promote"] == "false":  # better was champion before good was evaluated
        assert judged["good"]["champion-version"] == better_version
        assert judged["better"]["champion-version"] == ""
        assert runs["good"].tasks["promote"].state == "Skipped"
        assert aliases == {"champion": better_version}
    else:
        assert judged["better"]["promote"] == "true"
        good = runs["good"].tasks["promote"].results
        if good["promoted"] == "true":  # good promoted first, better replaced it
            assert aliases == {
                "champion": better_version,
                "previous-champion": good["model-version"],
            }
        else:  # both judged against no champion, better promoted first; good judged again
            assert judged["good"]["champion-version"] == ""
            assert aliases == {"champion": better_version}
            assert good["model-version"] == ""

    for label, run in runs.items():
        own = run.tasks["promote"].results.get("model-version", "")
        deployed = run.tasks["deploy"]
        if deployed.state == "Skipped":  # promote declined: no version to deploy
            assert own == "", label
            continue
        assert deployed.state == "Succeeded", (label, deployed.reason)
        served = deployed.results["model-version"]
        assert served in (own, ""), (label, served, own)  # its own version, or skipped
    live = deployments.list_deployments()
    assert [(d.version, d.state) for d in live] == [(better_version, "serving")]
