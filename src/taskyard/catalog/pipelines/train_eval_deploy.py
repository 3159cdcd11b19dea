"""train-eval-deploy: test, train, evaluate against the champion, promote and deploy if better.

``retrain`` is the same pipeline without the tests, ``drift-retrain`` the same with
``detect-drift`` in front of train; all come from :func:`build` so the promotion gate is
defined once. ``sweep`` (catalog/pipelines/sweep.py) puts the same gate (:func:`gate_tasks`,
:func:`pipeline_params`) after a fan-out of train and select-best.
"""

from __future__ import annotations

from taskyard.catalog.pipelines._parts import (
    ALLOW_NO_TESTS_PARAM,
    GIT_PARAMS,
    MLFLOW_PARAM,
    MLFLOW_WORKSPACE,
    SUBDIRECTORY_PARAM,
    WORKSPACES,
    clone_task,
    project_folder,
    report_task,
    test_task,
    with_images,
)
from taskyard.catalog.tasks import deploy, detect_drift, evaluate, promote, train
from taskyard.spec import (
    Param,
    PipelineResult,
    PipelineSpec,
    PipelineTask,
    When,
    param,
    result,
)

PROMOTE_GATE = When(input=result("evaluate", "promote"), operator="in", values=("true",))
# On every task after detect-drift, not only on train: Argo's `depends: train` also holds for a
# skipped train (docs/enhanced-depends-logic.md: `task` means Succeeded, Skipped or Daemoned),
# and evaluate would then read results train never wrote.
DRIFT_GATE = When(input=result("detect-drift", "drifted"), operator="in", values=("true",))


def drift_task(config: dict, mlflow: dict) -> PipelineTask:
    """detect-drift on the cloned project: the champion's reference vs the current batch."""
    return PipelineTask(
        name="detect-drift",
        task=detect_drift.TASK,
        params={
            "current": param("current"),
            "model-name": param("model-name"),
            "alpha": param("drift-alpha"),
            "min-psi": param("drift-min-psi"),
            "max-share": param("drift-max-share"),
            **config,
            **mlflow,
        },
        workspaces={"source": "source", "mlflow": "mlflow"},
        run_after=("clone",),
        timeout=1800,
    )


DRIFT_RESULTS = (("drifted", "detect-drift", "drifted"), ("drift-score", "detect-drift", "score"))
# The pipeline's drift params are detect-drift's own (defaults, types, descriptions), renamed.
DRIFT_PARAMS = [
    Param(**{**detect_drift.TASK.param(task_param).model_dump(), "name": name})
    for name, task_param in (
        ("current", "current"),
        ("drift-alpha", "alpha"),
        ("drift-min-psi", "min-psi"),
        ("drift-max-share", "max-share"),
    )
]


MLFLOW = {"mlflow-tracking-uri": param("mlflow-tracking-uri")}
ML_SPACES = {"source": "source", "mlflow": "mlflow"}


def project_config() -> dict[str, str]:
    """The project inside the clone (monorepos): config, imports and pytest are rooted there."""
    return {"subdirectory": project_folder(), "config": param("config")}


def gate_tasks(candidate: str, gate: tuple[When, ...] = ()) -> list[PipelineTask]:
    """evaluate -> [promote gate] promote -> deploy, for the model task ``candidate`` wrote
    (train, or select-best: the same results)."""
    config, mlflow, ml_spaces = project_config(), MLFLOW, ML_SPACES
    model_name = result(candidate, "model-name")
    return [
        PipelineTask(
            name="evaluate",
            task=evaluate.TASK,
            params={
                "model-uri": result(candidate, "model-uri"),
                "model-name": model_name,
                "min-score": param("min-score"),
                "min-improvement": param("min-improvement"),
                **config,
                **mlflow,
            },
            workspaces=ml_spaces,
            when=gate,
            timeout=1800,
        ),
        PipelineTask(
            name="promote",
            task=promote.TASK,
            params={
                "model-uri": result(candidate, "model-uri"),
                "model-name": model_name,
                "expected-champion": result("evaluate", "champion-version"),
                "min-score": param("min-score"),
                "min-improvement": param("min-improvement"),
                **config,
                "commit": result("clone", "commit"),
                "data-hash": result(candidate, "data-hash"),
                "eval-run-id": result("evaluate", "eval-run-id"),
                **mlflow,
            },
            workspaces=ml_spaces,
            when=(*gate, PROMOTE_GATE),
            timeout=600,
        ),
        # deploy reads promote's results, which orders it after promote on every engine (Tekton:
        # docs/pipelines.md "Passing one Task's Results into the Parameters..."; Argo: `depends`
        # from the reference) and serves exactly the version promote registered.
        PipelineTask(
            name="deploy",
            task=deploy.TASK,
            params={
                "model-name": model_name,
                "model-version": result("promote", "model-version"),
                "promoted": result("promote", "promoted"),
                "port": param("deploy-port"),
                "keep-serving": param("keep-serving"),
                "target": param("deploy-target"),
                "namespace": param("deploy-namespace"),
                "deployment-mode": param("deployment-mode"),
                "canary-percent": param("canary-percent"),
                "serve-image": param("serve-image"),
                **mlflow,
            },
            workspaces=ml_spaces,
            when=(*gate, PROMOTE_GATE),
            timeout=900,
        ),
    ]


# (pipeline result, task, task result) of the gate's tasks
GATE_RESULTS = (
    ("candidate-score", "evaluate", "candidate-score"),
    ("champion-score", "evaluate", "champion-score"),
    ("promote", "evaluate", "promote"),
    ("promoted", "promote", "promoted"),
    ("model-version", "promote", "model-version"),
    ("url", "deploy", "url"),
    ("smoke-prediction", "deploy", "smoke-prediction"),
)


def pipeline_params(*, with_tests: bool, drift: bool = False) -> list[Param]:
    """The params of the gated pipelines (a sweep's, minus ``overrides``, are the same)."""
    params = [
        *GIT_PARAMS,
        SUBDIRECTORY_PARAM,
        Param(
            name="config",
            default="taskyard.toml",
            description="The project's training config, relative to the project's folder.",
        ),
        Param(name="model-name", default="", description="Registered model name override."),
        Param(name="overrides", default="", description="Hyperparameter overrides (k=v,…)."),
        Param(
            name="min-score",
            type="number",
            default="",
            description="Absolute metric threshold override.",
        ),
        Param(
            name="min-improvement",
            type="number",
            default="",
            description="Minimum gain override.",
        ),
        Param(
            name="deploy-port",
            type="integer",
            default="0",
            description="Port of the local model server.",
        ),
        Param(
            name="keep-serving",
            type="boolean",
            default="true",
            description="Keep the model server running.",
        ),
        *(
            Param(**{**deploy.TASK.param(task_param).model_dump(), "name": name})
            for name, task_param in (
                ("deploy-target", "target"),
                ("deploy-namespace", "namespace"),
                ("deployment-mode", "deployment-mode"),
                ("canary-percent", "canary-percent"),
                ("serve-image", "serve-image"),
            )
        ),
        MLFLOW_PARAM,
    ]
    if with_tests:
        params.insert(2, Param(name="pytest-args", default="", description="Extra pytest args."))
        params.insert(3, ALLOW_NO_TESTS_PARAM)
    if drift:
        params[len(GIT_PARAMS) + 1 : len(GIT_PARAMS) + 1] = DRIFT_PARAMS
    return params


def build(
    name: str,
    *,
    with_tests: bool,
    display_name: str,
    description: str,
    gpu: bool = False,
    drift: bool = False,
) -> PipelineSpec:
    mlflow, ml_spaces, config = MLFLOW, ML_SPACES, project_config()
    tasks = [clone_task()]
    if with_tests:
        tasks.append(test_task())
    if drift:
        tasks.append(drift_task(config, mlflow))
    gate = (DRIFT_GATE,) if drift else ()
    tasks += [
        PipelineTask(
            name="train",
            task=train.GPU_TASK if gpu else train.TASK,
            params={
                "commit": result("clone", "commit"),
                "overrides": param("overrides"),
                "model-name": param("model-name"),
                **config,
                **mlflow,
            },
            workspaces=ml_spaces,
            run_after=("test",) if with_tests else (),
            when=gate,
            timeout=3600,
        ),
        *gate_tasks("train", gate),
    ]
    params = pipeline_params(with_tests=with_tests, drift=drift)
    bound, images = with_images([*tasks, report_task(name)])
    return PipelineSpec(
        name=name,
        display_name=display_name,
        description=description,
        categories=("MLOps",),
        tags=(
            "training",
            "evaluation",
            "deployment",
            "mlflow",
            *(("gpu",) if gpu else ()),
            *(("drift", "monitoring") if drift else ()),
        ),
        params=(*params, *images),
        workspaces=(*WORKSPACES, MLFLOW_WORKSPACE),
        tasks=bound[:-1],
        finally_=bound[-1:],
        results=tuple(
            PipelineResult(name=name, value=result(task, res))
            for name, task, res in (
                ("commit", "clone", "commit"),
                *((("tests-passed", "test", "passed"),) if with_tests else ()),
                *(DRIFT_RESULTS if drift else ()),
                ("metric-name", "train", "metric-name"),
                *GATE_RESULTS,
            )
        ),
        timeout=3 * 3600,
    )


PIPELINE = build(
    "train-eval-deploy",
    with_tests=True,
    display_name="Train, evaluate, deploy",
    description=(
        "Clones the project, runs its tests, trains, evaluates the challenger against the "
        "`champion`, and only if it is better promotes and deploys it (smoke test, rollback)."
    ),
)

GPU_PIPELINE = build(
    "train-eval-deploy-gpu",
    with_tests=True,
    gpu=True,
    display_name="Train on a GPU, evaluate, deploy",
    description=(
        "train-eval-deploy with the `train-gpu` task: training requests `nvidia.com/gpu` and "
        "uses CUDA (AMP for torch) when the node has one, the CPU otherwise."
    ),
)
