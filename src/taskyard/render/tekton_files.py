"""The Tekton catalog as files, in the tektoncd/catalog layout (``emit`` writes and checks them).

``tasks/<name>/<version>/{<name>.yaml, README.md, samples/<name>-run.yaml}`` and the same under
``pipelines/``. Pure: the text is a function of the catalog alone.
"""

from __future__ import annotations

from typing import Any

from taskyard.catalog import PIPELINES, TASKS
from taskyard.render import docs, emit, resolver, tekton, yamlfmt
from taskyard.spec import PipelineSpec, TaskSpec


def to_yaml(doc: dict[str, Any]) -> str:
    return yamlfmt.dump(doc)


def task_dir(t: TaskSpec) -> str:
    return f"tasks/{t.name}/{t.version}"


def pipeline_dir(p: PipelineSpec) -> str:
    return f"pipelines/{p.name}/{p.version}"


def _task_files(t: TaskSpec) -> dict[str, str]:
    base = task_dir(t)
    sample = to_yaml(tekton.taskrun_sample(t))
    sample_path = f"samples/{t.name}-run.yaml"
    readme = docs.task_readme(
        t,
        install=docs.Example(
            "kubectl",
            f"kubectl apply -f {base}/{t.name}.yaml\n"
            "# or every catalog task (not `-f tasks/ -R`: samples/ holds runs with generateName)\n"
            "kubectl apply -k tasks/",
            "bash",
        ),
        usage=[
            docs.Example(
                f"TaskRun (`{sample_path}`)",
                sample,
                note=(
                    "Runs the task alone on an existing PVC; create it with "
                    f"`kubectl create -f {base}/{sample_path}`."
                ),
            )
        ],
    )
    return {
        f"{base}/{t.name}.yaml": emit.HEADER + to_yaml(tekton.task(t)),
        f"{base}/README.md": readme,
        f"{base}/{sample_path}": emit.HEADER + sample,
    }


def _pipeline_files(p: PipelineSpec) -> dict[str, str]:
    base = pipeline_dir(p)
    sample = to_yaml(tekton.pipelinerun_sample(p))
    sample_path = f"samples/{p.name}-run.yaml"
    applies = [f"kubectl apply -f {task_dir(t)}/{t.name}.yaml" for t in _tasks_of(p)]
    install = [
        *applies,
        f"kubectl apply -f {base}/{p.name}.yaml",
        "# or every catalog pipeline with the tasks they run (see docs/distribution.md)",
        "kubectl apply -k pipelines/",
        f"# or no task at all: the git resolver fetches them at {resolver.CATALOG_SOURCE.revision}",
        f"kubectl apply -f {resolver.path(p)}",
    ]
    readme = docs.pipeline_readme(
        p,
        install=docs.Example("kubectl", "\n".join(install), "bash"),
        usage=[
            docs.Example(
                f"PipelineRun (`{sample_path}`)",
                sample,
                note=(
                    "A fresh PVC per run backs `source` (`volumeClaimTemplate`): the "
                    "PipelineRun owns it, so deleting the PipelineRun deletes the PVC "
                    "(tektoncd/pipeline docs/workspaces.md): delete finished runs to free "
                    "their storage. Set `mlflow-tracking-uri` "
                    "(where present) to an MLflow server every task pod can reach; the ML "
                    "steps refuse to start in a pod without one. Images are the `*-image` "
                    "params (pin a digest there). `timeouts.finally` keeps time for the "
                    "`report` after `timeouts.tasks` runs out. Start it with "
                    f"`kubectl create -f {base}/{sample_path}`."
                ),
            )
        ],
        task_link=lambda t: f"../../../{task_dir(t)}/README.md",
    )
    return {
        f"{base}/{p.name}.yaml": emit.HEADER + to_yaml(tekton.pipeline(p)),
        f"{base}/README.md": readme,
        f"{base}/{sample_path}": emit.HEADER + sample,
    }


def _tasks_of(p: PipelineSpec) -> list[TaskSpec]:
    seen: dict[str, TaskSpec] = {}
    for t in p.all_tasks:
        seen.setdefault(t.task.name, t.task)
    return list(seen.values())


def files() -> dict[str, str]:
    """Every rendered Tekton file of the catalog, by repo-relative path."""
    out: dict[str, str] = {}
    for t in TASKS.values():
        out.update(_task_files(t))
    for p in PIPELINES.values():
        out.update(_pipeline_files(p))
    return out
