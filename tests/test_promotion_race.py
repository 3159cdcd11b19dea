"""Two candidates evaluated against the same champion: the better one ends as champion.

Real models (the example project, sklearn), a real SQLite registry, the real step CLIs as
subprocesses where concurrency matters. The scenario of issue 10: both runs evaluated against
v1, both promoted; without compare-and-set the last promote wins, whichever is worse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskyard.steps import _cli, deploy, promote
from taskyard.steps._results import env_name
from tests.test_step_evaluate import BETTER, GOOD, NAME, WEAK, candidate, crown, evaluate
from tests.test_step_train import migrated_store, workspace


@pytest.fixture
def store(tmp_path, monkeypatch, tmp_path_factory):
    return migrated_store(tmp_path, monkeypatch, tmp_path_factory)


@pytest.fixture
def ws(tmp_path):
    return workspace(tmp_path)


def aliases() -> dict[str, str]:
    from mlflow import MlflowClient

    return {k: str(v) for k, v in MlflowClient().get_registered_model(NAME).aliases.items()}


def versions() -> list[str]:
    from mlflow import MlflowClient

    return sorted(str(v.version) for v in MlflowClient().search_model_versions(f"name='{NAME}'"))


def promote_argv(ws: Path, uri: str, expected: str) -> list[str]:
    return [
        "--source", str(ws), "--subdirectory", "repo", "--model-uri", uri,
        "--model-name", NAME, "--expected-champion", expected,
    ]  # fmt: skip


def run_promote(ws: Path, uri: str, expected: str) -> dict:
    p = promote.build_parser()  # glued as the step's main does: values may look like flags
    return promote.run(p.parse_args(_cli.glue_values(promote_argv(ws, uri, expected), p)))


def judged(ws: Path, uri: str) -> str:
    """evaluate against today's champion; the version it judged against (its result)."""
    r = evaluate(ws, uri)["results"]
    assert r["promote"] == "true"
    return r["champion-version"]


@pytest.fixture
def race(ws, store) -> tuple[str, str, str]:
    """v1 (weak) is champion; a good and a better candidate were both judged against v1."""
    crown(candidate(ws, WEAK))
    good, better = candidate(ws, GOOD), candidate(ws, BETTER)
    assert judged(ws, good) == judged(ws, better) == "1"
    return "1", good, better


def test_worse_promoting_first_cannot_keep_the_better_out(ws, race) -> None:
    v1, good, better = race
    first = run_promote(ws, good, v1)["results"]
    assert first == {"model-version": "2", "previous-version": "1", "promoted": "true"}
    # champion moved to v2 since `better` was judged: judged again against v2, and it wins.
    second = run_promote(ws, better, v1)
    assert second["results"] == {"model-version": "3", "previous-version": "2", "promoted": "true"}
    assert second["rejudged"]["promote"] is True
    assert any("beats champion v2" in r for r in second["rejudged"]["reasons"])
    assert aliases() == {"champion": "3", "previous-champion": "2"}


def test_better_promoting_first_keeps_the_worse_out(ws, race) -> None:
    v1, good, better = race
    assert run_promote(ws, better, v1)["results"]["model-version"] == "2"
    declined = run_promote(ws, good, v1)
    assert declined["results"] == {
        "model-version": "",
        "previous-version": "2",
        "promoted": "false",
    }
    assert "worse than champion v2" in declined["declined"]
    assert aliases() == {"champion": "2", "previous-champion": "1"}
    assert versions() == ["1", "2"]  # nothing registered for the declined candidate
    record = json.loads((ws / "artifacts" / "promote.json").read_text())
    assert record["results"]["promoted"] == "false" and record["rejudged"]["promote"] is False


def test_expected_champion_any_skips_the_check(ws, race) -> None:
    v1, good, better = race
    run_promote(ws, better, v1)
    forced = run_promote(ws, good, "any")["results"]
    assert forced["promoted"] == "true" and aliases()["champion"] == forced["model-version"]


def test_bad_expected_champion_is_one_line(ws, store) -> None:
    from taskyard.errors import StepError

    with pytest.raises(StepError, match="--expected-champion must be a version number"):
        run_promote(ws, "runs:/abc/model", "--upload-pack=x")


def test_deploy_skips_a_version_that_is_no_longer_champion(ws, race, tmp_path) -> None:
    """The slower run's deploy must not replace the newer champion's server."""
    v1, good, better = race
    run_promote(ws, good, v1)  # v2
    run_promote(ws, better, v1)  # v3 beats v2
    args = deploy.build_parser().parse_args(
        ["--source", str(ws), "--model-name", NAME, "--model-version", "2"]
    )
    record = deploy.run(args)
    assert record["results"] == {"url": "", "model-version": "", "smoke-prediction": ""}
    assert "version 2 is no longer 'champion' (version 3 is): not deployed" in record["skipped"]
    assert aliases() == {"champion": "3", "previous-champion": "2"}  # no rollback of v3


@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2])
def test_concurrent_promotes_end_with_the_best_champion(ws, race, tmp_path, attempt) -> None:
    """Both promote CLIs at once, as two pipeline runs would start them: the lock orders them,
    compare-and-set judges the second again; whichever goes first, the better one wins."""
    v1, good, better = race
    procs = []
    for label, uri in (("good", good), ("better", better)):
        out = tmp_path / f"results-{label}"
        env = dict(os.environ, **{env_name(r): str(out / r) for r in promote_results()})
        argv = [sys.executable, "-m", "taskyard.steps.promote", *promote_argv(ws, uri, v1)]
        procs.append(
            subprocess.Popen(
                argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    from mlflow import MlflowClient

    champion = MlflowClient().get_model_version_by_alias(NAME, "champion")
    assert champion.run_id == run_of(better)
    promoted = {label: (tmp_path / f"results-{label}" / "promoted").read_text()
                for label in ("good", "better")}  # fmt: skip
    previous = aliases()["previous-champion"]
    if promoted["good"] == "true":  # good went first; better replaced it
        good_version = (tmp_path / "results-good" / "model-version").read_text()
        assert previous == good_version
    else:  # better went first; good was judged again and declined
        assert previous == "1"
    assert any("waiting for the lock" in log or "judging again" in log for log in logs), logs


def promote_results() -> list[str]:
    from taskyard.catalog.tasks import promote as task

    return [r.name for r in task.TASK.results]


def run_of(uri: str) -> str:
    return uri.removeprefix("runs:/").split("/")[0]


def test_deploy_skips_when_promote_declined(tmp_path) -> None:
    """promote's `promoted=false` reaches deploy as a param (no registry needed to skip)."""
    args = deploy.build_parser().parse_args(
        ["--source", str(tmp_path), "--model-name", NAME, "--promoted", "false"]
    )
    record = deploy.run(args)
    assert record["skipped"].startswith("promote declined the candidate")
    assert record["results"]["url"] == ""
