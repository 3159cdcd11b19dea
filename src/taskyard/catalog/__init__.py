"""The catalog: every task and pipeline taskyard ships, looked up by name."""

from __future__ import annotations

import difflib

from taskyard.catalog.pipelines import ci, drift_retrain, retrain, sweep, train_eval_deploy
from taskyard.catalog.tasks import (
    deploy,
    detect_drift,
    evaluate,
    git_clone,
    promote,
    report,
    run_tests,
    select_best,
    train,
)
from taskyard.errors import CatalogError
from taskyard.spec import PipelineSpec, TaskSpec

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        git_clone.TASK,
        run_tests.TASK,
        train.TASK,
        train.GPU_TASK,
        select_best.TASK,
        detect_drift.TASK,
        evaluate.TASK,
        promote.TASK,
        deploy.TASK,
        report.TASK,
    )
}
PIPELINES: dict[str, PipelineSpec] = {
    p.name: p
    for p in (
        ci.PIPELINE,
        train_eval_deploy.PIPELINE,
        train_eval_deploy.GPU_PIPELINE,
        retrain.PIPELINE,
        drift_retrain.PIPELINE,
        sweep.PIPELINE,
    )
}


def _lookup(kind: str, name: str, table: dict) -> object:
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, table, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(sorted(table))
    raise CatalogError(f"unknown {kind} {name!r}", hint)


def get_task(name: str) -> TaskSpec:
    return _lookup("task", name, TASKS)  # type: ignore[return-value]


def get_pipeline(name: str) -> PipelineSpec:
    return _lookup("pipeline", name, PIPELINES)  # type: ignore[return-value]
