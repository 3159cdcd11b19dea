"""``taskyard run FILE.yaml``: a rendered Tekton or Argo file, executed as its engine would.

This is how a render is proven: not by its schema but by running exactly the YAML a cluster
would get, each container in its image (``--executor docker``), with the engine's documented
semantics (engines/tekton.py, engines/argo.py say which, with their sources). Anything the
emulation does not implement is a one-line error naming the field, never a silent skip.

What stands in for the cluster, and why:
- **MLflow**: on a cluster every pod talks to one MLflow server. When the file has a
  ``mlflow-tracking-uri`` param and the run does not set it, an MLflow server is started for
  the run on 127.0.0.1 (the taskyard home's store, artifacts proxied with
  ``--serve-artifacts``) and passed as that param -- the pods need no file of the host. Left
  empty, each pod would get its own store and the run fail, as finding 4 of issue 12 says.
- **Volumes** are folders of the run (mode 0777, like a fresh emptyDir); the containers run as
  the uid the YAML says (``runAsUser``), and when the run ends the files are given back to the
  invoking user (a ``chown`` in one of the run's images, as root, docker only).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from taskyard.engines._common import load_documents
from taskyard.engines.argo import KINDS as ARGO_KINDS
from taskyard.engines.argo import ArgoRun
from taskyard.engines.mlflow_server import MLFLOW_PARAM, MlflowServer
from taskyard.engines.pods import DockerPods, HostPods, Pods
from taskyard.engines.scheduler import Scheduler
from taskyard.engines.tekton import TektonRun
from taskyard.errors import RunError
from taskyard.run.runner import Observer
from taskyard.run.store import RunRecord, RunStore

TEKTON_KINDS = ("PipelineRun", "Pipeline")
RUNNABLE = (*TEKTON_KINDS, "Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate")


def catalog_tasks(path: Path) -> list[Path]:
    """The ``tasks/`` folder of the catalog a file sits in (its Tasks resolve by name)."""
    for parent in path.resolve().parents:
        if (parent / "tasks").is_dir() and (parent / "pipelines").is_dir():
            return [parent / "tasks"]
    return []


def target_of(docs: list[tuple[Path, dict]], path: Path) -> dict:
    """The one object of ``path`` to run: a run object over the definition it names."""
    mine = [d for f, d in docs if f == path]
    for kinds in (
        ("PipelineRun", "Workflow"),
        ("Pipeline", "WorkflowTemplate", "ClusterWorkflowTemplate"),
    ):
        found = [d for d in mine if d.get("kind") in kinds]
        if len(found) > 1:
            raise RunError(
                f"{path} holds {len(found)} runnable objects ({found[0]['kind']})",
                "keep one per file",
            )
        if found:
            return found[0]
    kinds = sorted({str(d.get("kind")) for d in mine})
    raise RunError(
        f"{path}: nothing to run (found {', '.join(kinds) or 'no object'})",
        "taskyard run takes a Tekton Pipeline/PipelineRun or an Argo WorkflowTemplate/Workflow",
    )


def prepare(
    path: Path,
    params: Mapping[str, str],
    workspaces: Mapping[str, str],
    extra: Sequence[Path] = (),
    git_repos: Mapping[str, str] | None = None,
) -> TektonRun | ArgoRun:
    """Parse and check everything before anything runs (a bad file fails here, in one line)."""
    if not path.is_file():
        raise RunError(f"no such file: {path}")
    files = [path, *extra, *catalog_tasks(path)] if not extra else [path, *extra]
    docs = load_documents(files)
    target = target_of(docs, path)
    bound = {}
    for key, value in workspaces.items():
        folder = Path(value).expanduser().resolve()
        if not folder.is_dir():
            raise RunError(f"workspace {key!r}: {folder} is not a folder")
        bound[key] = folder
    if target["kind"] in TEKTON_KINDS:
        if target.get("apiVersion") != "tekton.dev/v1":
            raise RunError(
                f"{path}: {target.get('apiVersion')} {target['kind']}: "
                "taskyard run reads tekton.dev/v1 only"
            )
        repos = {k: Path(v).expanduser().resolve() for k, v in (git_repos or {}).items()}
        return TektonRun(docs, target, params, bound, git_repos=repos)
    if target["kind"] in ARGO_KINDS:
        if target.get("apiVersion") != "argoproj.io/v1alpha1":
            raise RunError(
                f"{path}: {target.get('apiVersion')}: taskyard run reads argoproj.io/v1alpha1"
            )
        return ArgoRun(docs, target, params, bound)
    raise RunError(f"{path}: a {target['kind']} cannot be run")


def run_file(
    path: Path,
    params: Mapping[str, str],
    workspaces: Mapping[str, str],
    *,
    executor: str = "subprocess",
    extra: Sequence[Path] = (),
    git_repos: Mapping[str, str] | None = None,
    max_parallel: int = 4,
    observer: Observer | None = None,
    run_id: str | None = None,
    store: RunStore | None = None,
) -> RunRecord:
    params = dict(params)
    engine = prepare(path, params, workspaces, extra, git_repos)
    server = None
    if (
        MLFLOW_PARAM in engine.params
        and not engine.params[MLFLOW_PARAM]
        and MLFLOW_PARAM not in params
    ):
        server = MlflowServer().start()
        params[MLFLOW_PARAM] = server.url
        engine = prepare(path, params, workspaces, extra, git_repos)
    try:
        store = store or RunStore()
        rec = store.create(engine.pipeline, run_id)
        rec.params = dict(engine.params)
        pods: Pods = (
            DockerPods(rec.id, rec.path / "pods")
            if executor == "docker"
            else HostPods(rec.path / "pods")
        )
        rec.executor = pods.name
        engine.bind(rec)
        after = None
        if isinstance(pods, DockerPods):
            after = lambda: give_back(rec.path, sorted(pods.images))  # noqa: E731
        limit = max_parallel
        if isinstance(engine, ArgoRun) and engine.parallelism:
            limit = min(limit, engine.parallelism)
        return Scheduler(
            engine, pods, rec, max_parallel=limit, observer=observer, after=after
        ).run()
    finally:
        if server:
            server.stop()


def give_back(folder: Path, images: Sequence[str]) -> None:
    """Hand the run's files, written by the YAML's ``runAsUser``, back to the invoking user."""
    from taskyard.images import image_exists

    uid, gid = os.getuid(), os.getgid()
    for image in images:
        if image_exists(image):
            subprocess.run(
                ["docker", "run", "--rm", "--user", "0:0", "--network", "none",
                 "-v", f"{folder}:{folder}", "--entrypoint", "chown", image,
                 "-R", f"{uid}:{gid}", str(folder)],
                capture_output=True,
                check=False,
            )  # fmt: skip
            return
