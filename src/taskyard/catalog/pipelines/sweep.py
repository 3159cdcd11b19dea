"""sweep: train over a hyperparameter grid, keep the best trial, and gate it like any candidate.

clone -> test -> train (one trial per grid point) -> select-best -> evaluate -> [promote gate]
promote -> deploy; finally report. The fan-out is the engines' own: Tekton ``matrix``, Argo
``withItems``, the local runner's trials (in parallel up to ``--max-parallel``).

The grid is fixed in the definition (:data:`GRID`, 2x2), as one ``overrides`` string per point
(``n_estimators=50,max_depth=3``), because that is what renders and runs the same everywhere:
train takes its hyperparameters as one ``--overrides`` string, and a run-time grid would need an
array pipeline param on Tekton (``matrix.params[].value: $(params.grid[*])``) but a JSON string
``withParam`` on Argo, two different interfaces for one run. A fork changes the grid with
:func:`build` (``build(grid={"max_depth": (4, 8, 16)})``) and re-renders.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from taskyard.catalog.pipelines._parts import (
    MLFLOW_WORKSPACE,
    WORKSPACES,
    clone_task,
    report_task,
    test_task,
    with_images,
)
from taskyard.catalog.pipelines.train_eval_deploy import (
    GATE_RESULTS,
    ML_SPACES,
    MLFLOW,
    gate_tasks,
    pipeline_params,
    project_config,
)
from taskyard.catalog.tasks import select_best, train
from taskyard.spec import PipelineResult, PipelineSpec, PipelineTask, param, result
from taskyard.spec.refs import results

# hyperparameter -> values; the example project's RandomForest (examples/wine-classifier).
GRID: dict[str, tuple[object, ...]] = {"n_estimators": (50, 200), "max_depth": (2, 8)}


def overrides(grid: Mapping[str, Sequence[object]]) -> tuple[str, ...]:
    """Every grid point as train's ``--overrides`` string, the first key varying slowest."""
    keys = list(grid)
    return tuple(
        ",".join(f"{k}={v}" for k, v in zip(keys, point, strict=True))
        for point in itertools.product(*(grid[k] for k in keys))
    )


def build(
    grid: Mapping[str, Sequence[object]] = GRID,
    name: str = "sweep",
) -> PipelineSpec:
    config = project_config()
    tasks = [
        clone_task(),
        test_task(),
        PipelineTask(
            name="train",
            task=train.TASK,
            params={
                "commit": result("clone", "commit"),
                "model-name": param("model-name"),
                **config,
                **MLFLOW,
            },
            matrix={"overrides": overrides(grid)},
            workspaces=ML_SPACES,
            run_after=("test",),
            timeout=3600,
        ),
        PipelineTask(
            name="select-best",
            task=select_best.TASK,
            params={
                "run-ids": results("train", "run-id"),
                "commit": result("clone", "commit"),
                **config,
                **MLFLOW,
            },
            workspaces=ML_SPACES,
            timeout=600,
        ),
        *gate_tasks("select-best"),
    ]
    params = [p for p in pipeline_params(with_tests=True) if p.name != "overrides"]
    bound, images = with_images([*tasks, report_task(name)])
    return PipelineSpec(
        name=name,
        display_name="Sweep a hyperparameter grid, evaluate, deploy",
        description=(
            "Clones the project, runs its tests, trains one trial per point of a hyperparameter "
            "grid in parallel, selects the best trial by the project's metric (read from "
            "MLflow, trials nested under one sweep run), and gates it like train-eval-deploy."
        ),
        categories=("MLOps",),
        tags=("training", "hyperparameter-tuning", "evaluation", "deployment", "mlflow"),
        params=(*params, *images),
        workspaces=(*WORKSPACES, MLFLOW_WORKSPACE),
        tasks=bound[:-1],
        finally_=bound[-1:],
        results=tuple(
            PipelineResult(name=name, value=result(task, res))
            for name, task, res in (
                ("commit", "clone", "commit"),
                ("tests-passed", "test", "passed"),
                ("metric-name", "select-best", "metric-name"),
                ("best-run-id", "select-best", "run-id"),
                ("sweep-run-id", "select-best", "sweep-run-id"),
                *GATE_RESULTS,
            )
        ),
        timeout=4 * 3600,
    )


PIPELINE = build()
