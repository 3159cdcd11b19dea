"""Pipeline pieces the catalog pipelines share (params, the clone task, the report)."""

from __future__ import annotations

from collections.abc import Sequence

from taskyard.catalog.tasks import git_clone, report, run_tests
from taskyard.errors import SpecError
from taskyard.spec import (
    RUN_NAME,
    TASKS_STATUS,
    Param,
    PipelineTask,
    PipelineWorkspace,
    param,
)

GIT_PARAMS = [
    Param(name="repo-url", description="The ML project's git repository."),
    Param(name="revision", default="", description="Branch, tag or commit; empty: remote HEAD."),
    Param(
        name="allow-file-url",
        type="boolean",
        default="false",
        description="Let git-clone use file:// URLs and local paths (local runs, tests).",
    ),
]
SUBDIRECTORY_PARAM = Param(
    name="subdirectory",
    default="",
    description=(
        "The project's folder inside the repository (monorepos); empty: the repository root."
    ),
)
ALLOW_NO_TESTS_PARAM = Param(
    name="allow-no-tests",
    type="boolean",
    default="false",
    description="Let a project without tests pass the test task (passed = 0).",
)
CLONE_DIR = "repo"  # where git-clone puts the repository inside the `source` workspace


def project_folder() -> str:
    """The ML tasks' and run-tests' `subdirectory`: the project inside the cloned repository.

    The empty default gives ``repo/``, which every step reads as ``repo``
    (``Path("ws") / "repo/"`` is ``ws/repo``).
    """
    return f"{CLONE_DIR}/{param('subdirectory')}"


MLFLOW_PARAM = Param(
    name="mlflow-tracking-uri",
    default="",
    description=(
        "MLflow tracking URI; empty: the local runner's SQLite store (on a cluster the ML "
        "tasks fail on an empty one)."
    ),
)
WORKSPACES = [
    PipelineWorkspace(name="source", description="Shared by every task of the run."),
    PipelineWorkspace(
        name="git-credentials",
        optional=True,
        description="`.git-credentials` + `.gitconfig` for private HTTPS repositories.",
    ),
    PipelineWorkspace(
        name="ssh-directory",
        optional=True,
        description="A `.ssh` folder for private ssh repositories.",
    ),
]

MLFLOW_WORKSPACE = PipelineWorkspace(
    name="mlflow",
    optional=True,
    description="MLflow credentials for the ML tasks (a Secret; see the train task's README).",
)


def test_task() -> PipelineTask:
    """run-tests on the cloned project, after the clone (ci and train-eval-deploy share it)."""
    return PipelineTask(
        name="test",
        task=run_tests.TASK,
        params={
            "subdirectory": project_folder(),
            "pytest-args": param("pytest-args"),
            "allow-no-tests": param("allow-no-tests"),
            "mlflow-tracking-uri": param("mlflow-tracking-uri"),  # the cache's store
        },
        workspaces={"source": "source", "mlflow": "mlflow"},
        run_after=("clone",),
        timeout=1800,
    )


def clone_task() -> PipelineTask:
    return PipelineTask(
        name="clone",
        task=git_clone.TASK,
        params={
            "url": param("repo-url"),
            "revision": param("revision"),
            "allow-file": param("allow-file-url"),
            "subdirectory": CLONE_DIR,
        },
        workspaces={
            "output": "source",
            "git-credentials": "git-credentials",
            "ssh-directory": "ssh-directory",
        },
        retries=2,
        timeout=600,
    )


def report_task(pipeline: str) -> PipelineTask:
    return PipelineTask(
        name="report",
        task=report.TASK,
        params={"status": TASKS_STATUS, "run-name": RUN_NAME, "pipeline": pipeline},
        workspaces={"source": "source"},
        timeout=300,
    )


# ---- images ------------------------------------------------------------------------------------
IMAGE_PARAM = "image"  # every catalog task's image param (catalog/_common.py image_param)


def image_name(pt: PipelineTask) -> str:
    """The image a task runs, by its short name: ``train`` for ``<registry>/train:<version>``."""
    default = pt.task.param(IMAGE_PARAM).default or ""
    return default.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]


CACHE_PARAM = Param(
    name="cache",
    type="boolean",
    default="true",
    description=(
        "Let the cached tasks (tests, train, evaluate) replay results stored for the same "
        "inputs; `false` computes every task (`taskyard run --no-cache`)."
    ),
)


def with_images(
    tasks: Sequence[PipelineTask],
) -> tuple[tuple[PipelineTask, ...], tuple[Param, ...]]:
    """Bind each task's ``image`` to a pipeline param ``<image>-image``, and each cached task's
    ``cache`` switch to the pipeline's ``cache``: the params a run sets for all its tasks.

    A run can only choose images through pipeline params: a v1 ``PipelineTaskRunSpec`` has no
    field that sets a task param (tektoncd/pipeline pkg/apis/pipeline/v1/pipelinerun_types.go),
    and an Argo Workflow can only override ``spec.arguments``. One param per image, not per
    task, so ``train-image=…@sha256:…`` pins every task that runs the ``train`` image.
    """
    bound: list[PipelineTask] = []
    params: dict[str, Param] = {}
    cached = [pt.task.cache and CACHE_PARAM.name not in pt.params for pt in tasks]
    tasks = [
        pt.model_copy(update={"params": {**pt.params, CACHE_PARAM.name: param(CACHE_PARAM.name)}})
        if c
        else pt
        for pt, c in zip(tasks, cached, strict=True)
    ]
    if any(cached):
        params[CACHE_PARAM.name] = CACHE_PARAM
    for pt in tasks:
        if IMAGE_PARAM not in pt.task.param_names or IMAGE_PARAM in pt.params:
            bound.append(pt)
            continue
        image = image_name(pt)
        name = f"{image}-image"
        default = pt.task.param(IMAGE_PARAM).default or ""
        if name in params and params[name].default != default:
            raise SpecError(
                f"tasks {pt.name!r} and another run image {image!r} with different defaults "
                f"({default!r}, {params[name].default!r})"
            )
        params.setdefault(
            name,
            Param(
                name=name,
                default=default,
                description=(
                    f"The `{image}` task image, `<registry>/{image}:<version>`; a digest pins "
                    f"it: `<registry>/{image}@sha256:<digest>` or "
                    f"`<registry>/{image}:<version>@sha256:<digest>`."
                ),
            ),
        )
        bound.append(pt.model_copy(update={"params": {**pt.params, IMAGE_PARAM: param(name)}}))
    return tuple(bound), tuple(params.values())
