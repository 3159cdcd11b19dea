"""The one way a catalog task is built, so every task keeps the step contract.

The contract (same on Tekton, Argo and local):
- the container runs ``python -m taskyard.steps.<module>`` with params passed as separate
  args (never interpolated into a shell script);
- each result NAME is written to the file named by env ``TASKYARD_RESULT_<NAME>``
  (upper-cased, '-' -> '_'), which every engine points at its own result path;
- the image is a param, so a user can point at their own registry.
"""

from __future__ import annotations

from taskyard import __version__
from taskyard.spec import Param, Resources, Result, TaskSpec, Workspace, result_path
from taskyard.spec.task import CACHE_AGE_PARAM, CACHE_PARAM, CACHE_RESULT
from taskyard.steps._results import env_name as result_env_name

REGISTRY = "ghcr.io/taskyard"


def image_param(image: str) -> Param:
    return Param(
        name="image",
        default=f"{REGISTRY}/{image}:{__version__}",
        description=f"The `{image}` task image; point it at your own registry or a pinned digest.",
    )


def source_workspace(description: str = "The shared pipeline workspace.") -> Workspace:
    return Workspace(name="source", description=description)


def step_task(
    *,
    name: str,
    module: str,
    image: str,
    display_name: str,
    description: str,
    args: list[str],
    params: list[Param],
    results: list[Result],
    workspaces: list[Workspace],
    env: dict[str, str] | None = None,
    categories: tuple[str, ...] = ("MLOps",),
    tags: tuple[str, ...] = (),
    resources: Resources | None = None,
    network: bool = False,
    cache: bool = False,
) -> TaskSpec:
    if cache:
        params, results, args = [*params, *cache_params()], [*results, CACHED_FROM], [*args]
        args += ["--cache", f"$(params.{CACHE_PARAM})"]
        args += ["--cache-max-age", f"$(params.{CACHE_AGE_PARAM})"]
        env = {**(env or {}), CACHE_IMAGE_ENV: "$(params.image)"}
    full_env = {result_env_name(r.name): result_path(r.name) for r in results}
    full_env.update(env or {})
    return TaskSpec(
        name=name,
        display_name=display_name,
        description=description,
        categories=categories,
        tags=tags,
        image="$(params.image)",
        command=("python", "-m", f"taskyard.steps.{module}"),
        args=tuple(args),
        env=full_env,
        params=(*params, image_param(image)),
        results=tuple(results),
        workspaces=tuple(workspaces),
        resources=resources or Resources(),
        network=network,
        cache=cache,
    )


# The image param reaches a cached step, whose key holds the digest when the image is pinned.
CACHE_IMAGE_ENV = "TASKYARD_IMAGE"
CACHED_FROM = Result(
    name=CACHE_RESULT,
    description=(
        "The cache entry (an MLflow run in experiment `taskyard-cache`) whose results this "
        "task replayed; empty when it computed them."
    ),
)


def cache_params() -> list[Param]:
    return [
        Param(
            name=CACHE_PARAM,
            type="boolean",
            default="true",
            description=(
                "Replay the stored results when every input was seen before: the step code "
                "or image digest, the params, the commit and the data's content hash "
                "(docs/caching.md). `false` always computes (and stores nothing)."
            ),
        ),
        Param(
            name=CACHE_AGE_PARAM,
            default="",
            description="Ignore cache entries older than this (`30d`, `12h`, `90m`); empty: any.",
        ),
    ]


def project_params() -> list[Param]:
    """Where the ML project lives in the source workspace (shared by the ML tasks)."""
    return [
        Param(
            name="subdirectory",
            default="repo",
            description=(
                "Folder of the project inside the `source` workspace: `repo` (where git-clone "
                "puts it), or `repo/<path>` for a project inside a monorepo."
            ),
        ),
        Param(
            name="config",
            default="taskyard.toml",
            description="The project's training config, relative to the project folder.",
        ),
    ]


def mlflow_param() -> Param:
    return Param(
        name="mlflow-tracking-uri",
        default="",
        description=(
            "MLflow tracking URI. Empty: the local runner's store (SQLite under the "
            "taskyard home); on a cluster set it to your MLflow server (empty fails the step "
            "in a pod)."
        ),
    )


def mlflow_workspace() -> Workspace:
    return Workspace(
        name="mlflow",
        optional=True,
        read_only=True,
        description=(
            "MLflow credentials (e.g. a Secret): files `MLFLOW_TRACKING_USERNAME` and "
            "`MLFLOW_TRACKING_PASSWORD`, or `MLFLOW_TRACKING_TOKEN`."
        ),
    )


MLFLOW_ENV = {
    "MLFLOW_TRACKING_URI": "$(params.mlflow-tracking-uri)",
    "TASKYARD_MLFLOW_CREDENTIALS": "$(workspaces.mlflow.path)",
}
