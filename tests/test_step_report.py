"""report summarises hand-written step records and never fails over a missing or broken one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskyard.steps._cli import write_record

COMMIT = "3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39"
RECORDS: dict[str, dict[str, Any]] = {
    "git-clone": {
        "results": {"commit": COMMIT, "url": "https://example.com/acme/churn.git"},
        "revision": "main",
        "branch": "main",
        "subject": "Tune the churn model",
        "committer_date": "2026-01-02T03:04:05+00:00",
    },
    "run-tests": {
        "results": {"passed": "14", "failed": "0", "report": "artifacts/junit.xml"},
        "status": "passed",
        "skipped": 1,
        "duration": 2.5,
        "failed_tests": [],
    },
    "train": {
        "results": {
            "run-id": "abc123",
            "model-uri": "runs:/abc123/model",
            "model-name": "churn",
            "metric-name": "roc_auc",
            "metric-value": "0.9312345",
            "data-hash": "d" * 64,
        }
    },
    "evaluate": {
        "results": {
            "promote": "true",
            "metric-name": "roc_auc",
            "candidate-score": "0.9312345",
            "champion-score": "0.9011",
            "champion-version": "3",
            "eval-run-id": "ev1",
            "report": "artifacts/evaluation.md",
        }
    },
    "promote": {
        "results": {"model-version": "4", "previous-version": "3"},
        "model_name": "churn",
    },
    "deploy": {
        "results": {
            "url": "http://127.0.0.1:5123",
            "model-version": "4",
            "smoke-prediction": "[0.12, 0.88]",
        }
    },
}


def run_report(
    ws: Path, tmp_path: Path, *, status: str = "Succeeded", pipeline: str = "train-eval-deploy"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_RESULT_")}
    env["TASKYARD_RESULT_SUMMARY"] = str(tmp_path / "results" / "summary")
    args = ["--source", str(ws), "--status", status, "--run-name", "tedr-7x2k"]
    return subprocess.run(
        [sys.executable, "-m", "taskyard.steps.report", *args, "--pipeline", pipeline],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(ws: Path, *names: str) -> None:
    for name in names:
        write_record(ws, name, RECORDS[name])


def summary(ws: Path) -> tuple[str, dict[str, Any]]:
    art = ws / "artifacts"
    return (art / "summary.md").read_text(), json.loads((art / "summary.json").read_text())


def test_full_successful_run(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws, *RECORDS)
    proc = run_report(ws, tmp_path)
    assert proc.returncode == 0, proc.stderr
    md, data = summary(ws)
    assert proc.stdout.strip() == md.strip()  # the Markdown is the task log too
    assert (tmp_path / "results" / "summary").read_text() == "artifacts/summary.md"
    assert "# Run report: train-eval-deploy / tedr-7x2k" in md
    assert "**Status:** Succeeded" in md
    for fact in (
        COMMIT,
        "on `main`",
        "Tune the churn model",
        "14 passed, 0 failed, 1 skipped",
        "roc_auc = 0.9312",
        "candidate 0.9312 vs champion 0.9011 (version 3)",
        "**promote**",
        "`churn` version 4 promoted (previous: 3)",
        "Serving http://127.0.0.1:5123 (version 4)",
        "[0.12, 0.88]",
    ):
        assert fact in md, fact
    assert "Steps without a record" not in md
    assert data["outcome"] == "succeeded"
    assert data["missing"] == []
    assert [s["name"] for s in data["steps"]] == [
        "clone",
        "test",
        "train",
        "evaluate",
        "promote",
        "deploy",
    ]
    assert data["source"]["commit"] == COMMIT
    assert data["evaluation"]["promote"] == "true"
    assert data["deployment"]["model-version"] == "4"


def test_not_promoted_names_the_skipped_steps(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws, "git-clone", "run-tests", "train")
    write_record(
        ws, "evaluate", {"results": {**RECORDS["evaluate"]["results"], "promote": "false"}}
    )
    proc = run_report(ws, tmp_path, status="Completed")
    assert proc.returncode == 0, proc.stderr
    md, data = summary(ws)
    assert "**keep the champion**" in md
    assert "promote: skipped: evaluate decided not to promote" in md
    assert "deploy: skipped: evaluate decided not to promote" in md
    assert data["missing"] == ["promote", "deploy"]
    assert data["outcome"] == "succeeded"


def test_failed_tests_and_missing_later_steps(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws, "git-clone")
    write_record(
        ws,
        "run-tests",
        {
            "results": {"passed": "12", "failed": "2", "report": "artifacts/junit.xml"},
            "status": "failed",
            "failed_tests": ["tests.test_m::test_a", "tests.test_m::test_b"],
        },
    )
    proc = run_report(ws, tmp_path, status="Failed")
    assert proc.returncode == 0, proc.stderr
    md, data = summary(ws)
    assert "**Status:** Failed" in md
    assert "| test (run-tests) | failed: 2 test(s) failed |" in md
    assert "`tests.test_m::test_a`" in md
    assert "train: no record" in md
    assert data["missing"] == ["train", "evaluate", "promote", "deploy"]
    assert data["outcome"] == "failed"


def test_ci_pipeline_expects_only_its_tasks(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws, "git-clone", "run-tests")
    proc = run_report(ws, tmp_path, pipeline="ci", status="Succeeded")
    assert proc.returncode == 0, proc.stderr
    _, data = summary(ws)
    assert data["missing"] == []
    assert "model" not in data


@pytest.mark.parametrize("status", ["Succeeded", "Failed", "Error", "Completed", "None", ""])
def test_argo_and_tekton_status_vocabularies(tmp_path: Path, status: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    proc = run_report(ws, tmp_path, status=status)
    assert proc.returncode == 0, proc.stderr
    _, data = summary(ws)
    expected = {"Succeeded": "succeeded", "Completed": "succeeded", "Failed": "failed"}
    expected |= {"Error": "failed", "None": "unknown", "": "unknown"}
    assert data["outcome"] == expected[status]


def test_no_records_at_all(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    proc = run_report(ws, tmp_path, status="Failed")
    assert proc.returncode == 0, proc.stderr
    md, data = summary(ws)
    assert "clone (git-clone): no record" in md
    assert len(data["missing"]) == 6


def test_malformed_records_never_fail_the_report(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws, "git-clone", "deploy")
    art = ws / "artifacts"
    (art / "run-tests.json").write_text("{not json")
    (art / "train.json").write_text('["a", "list"]')
    (art / "evaluate.json").write_text(json.dumps({"results": {"candidate-score": {"x": 1}}}))
    (art / "promote.json").write_text(json.dumps({"results": "oops", "status": 7}))
    (art / "evaluation.json").write_text(json.dumps({"not": "a record"}))  # another artifact
    (art / "binary.json").write_bytes(b"\xff\xfe\x00")
    proc = run_report(ws, tmp_path, status="Failed")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    md, data = summary(ws)
    assert "artifacts/run-tests.json: unreadable record" in md
    assert "| test (run-tests) | record unreadable (see Problems) |" in md
    assert "artifacts/train.json: not a step record" in md
    assert "artifacts/promote.json: not a step record" in md
    assert "Serving http://127.0.0.1:5123" in md
    assert "evaluation" in data  # shown with whatever it holds
    assert "run-tests" in data["missing"]
    assert not any("evaluation.json" in p or "binary.json" in p for p in data["problems"])


def test_long_and_odd_values_stay_on_one_line(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write_record(
        ws,
        "deploy",
        {"results": {"url": "http://x | y", "model-version": 4, "smoke-prediction": "9" * 5000}},
    )
    proc = run_report(ws, tmp_path)
    assert proc.returncode == 0, proc.stderr
    md, _ = summary(ws)
    smoke = next(line for line in md.splitlines() if "Smoke prediction" in line)
    assert len(smoke) < 300 and smoke.endswith("...`")


def test_unknown_pipeline_lists_what_was_recorded(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws, "git-clone")
    write_record(ws, "my-custom-step", {"results": {"x": "1"}, "status": "done"})
    proc = run_report(ws, tmp_path, pipeline="my-own")
    assert proc.returncode == 0, proc.stderr
    _, data = summary(ws)
    assert [s["task"] for s in data["steps"]] == ["git-clone", "my-custom-step"]
    assert data["missing"] == []


@pytest.mark.parametrize("source", ["", "missing"])
def test_unusable_source_fails(tmp_path: Path, source: str) -> None:
    """An empty --source must not silently mean the current folder."""
    target = str(tmp_path / source) if source else ""
    proc = subprocess.run(
        [sys.executable, "-m", "taskyard.steps.report", "--source", target, "--status", "x"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: source workspace")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "artifacts").exists()


def test_gpu_pipeline_accepts_the_train_record(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws, *RECORDS)
    proc = run_report(ws, tmp_path, pipeline="train-eval-deploy-gpu")
    assert proc.returncode == 0, proc.stderr
    md, data = summary(ws)
    assert data["missing"] == []
    assert [s["task"] for s in data["steps"]].count("train-gpu") == 1
    assert "train" not in [s["task"] for s in data["steps"]]
    assert "roc_auc = 0.9312" in md


def test_a_recorded_failure_is_shown(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws, "git-clone", "run-tests", "train", "evaluate")
    write_record(ws, "promote", {"results": {}, "error": "registry unreachable"})
    write_record(ws, "evaluate", {**RECORDS["evaluate"], "reasons": ["0.93 >= 0.80 threshold"]})
    proc = run_report(ws, tmp_path, status="Failed")
    assert proc.returncode == 0, proc.stderr
    md, data = summary(ws)
    assert "| promote | failed: registry unreachable |" in md
    assert "- registry: registry unreachable" in md
    assert "## Registry" not in md
    assert "  - 0.93 >= 0.80 threshold" in md
    assert data["registry"]["error"] == "registry unreachable"
    assert data["missing"] == ["deploy"]


def test_a_declined_promotion_and_a_skipped_deploy_are_said(tmp_path: Path) -> None:
    """A concurrent run promoted first: promote judged again and declined, deploy skipped."""
    ws = tmp_path / "ws"
    write(ws, "git-clone", "run-tests", "train", "evaluate")
    why = "candidate is worse than champion v5 (0.9500); the champion stays"
    write_record(
        ws,
        "promote",
        {
            "results": {"model-version": "", "previous-version": "5", "promoted": "false"},
            "model_name": "churn",
            "declined": why,
        },
    )
    skipped = "promote declined the candidate (judged again): nothing to deploy: not deployed"
    write_record(
        ws,
        "deploy",
        {"results": {"url": "", "model-version": "", "smoke-prediction": ""}, "skipped": skipped},
    )
    proc = run_report(ws, tmp_path)
    assert proc.returncode == 0, proc.stderr
    md, data = summary(ws)
    assert f"`churn` not promoted: {why} (champion: version 5)" in md
    assert f"Not deployed: {skipped}" in md
    assert "Serving" not in md
    steps = {s["name"]: s["outcome"] for s in data["steps"]}
    assert steps["promote"].startswith("declined: candidate is worse")
    assert steps["deploy"].startswith("skipped: promote declined")
