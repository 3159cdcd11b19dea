"""``taskyard render``: the catalog's engine files, or one pipeline's for a team's repository.

Without ``--pipeline`` it rewrites (or ``--check``s) the committed catalog renders under the
current folder, exactly as before. With ``--pipeline NAME|FILE.py:ATTR --repo-url … --out DIR``
it writes that pipeline's Tekton and Argo files with the repository's values
(:mod:`taskyard.render.project`), under DIR only.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from taskyard.cli._common import UsageError, pairs
from taskyard.errors import TaskyardError
from taskyard.render.emit import ENGINES

if TYPE_CHECKING:
    from taskyard.render.project import Schedule
    from taskyard.render.values import Values

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Flags that only mean something for a repository render, by their argparse dest.
_PROJECT_FLAGS = {
    "repo_url": "--repo-url",
    "model_name": "--model-name",
    "mlflow_tracking_uri": "--mlflow-tracking-uri",
    "namespace": "--namespace",
    "image_registry": "--image-registry",
    "branch": "--branch",
    "schedule": "--schedule",
    "param": "-p",
    "out": "--out",
}


def add_render(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "render",
        parents=[common],
        help="write the Tekton/Argo files from the definitions",
        description=(
            "Rewrite the rendered engine files under the current folder. With --pipeline: "
            "write one pipeline's Tekton Tasks, Pipeline, PipelineRun and Triggers and its Argo "
            "WorkflowTemplate, CronWorkflow, EventSource and Sensor for your repository, "
            "under --out."
        ),
    )
    p.add_argument("--check", action="store_true", help="fail if committed files differ")
    p.add_argument("--engine", choices=sorted(ENGINES), help="only this engine")
    g = p.add_argument_group("for your repository")
    g.add_argument("--pipeline", metavar="NAME|FILE.py:ATTR", help="a catalog pipeline or a fork")
    g.add_argument("--repo-url", metavar="URL", help="the repository every run clones")
    g.add_argument("--model-name", metavar="NAME", help="the registered model name")
    g.add_argument("--mlflow-tracking-uri", metavar="URI", help="the MLflow server tasks log to")
    g.add_argument("--namespace", metavar="NS", help="set on every object (default: none)")
    g.add_argument(
        "--image-registry",
        metavar="REG",
        help="task images as REG/<image>:<version> (default: ghcr.io/taskyard)",
    )
    g.add_argument(
        "--branch",
        action="append",
        metavar="GLOB",
        help="pushes to it run the pipeline (repeatable; default: main)",
    )
    g.add_argument(
        "--schedule",
        metavar="CRON",
        help='a scheduled run, 5-field cron (default: "0 3 * * *"; "" for none)',
    )
    g.add_argument(
        "-p",
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="another pipeline param's value in every run and trigger (repeatable)",
    )
    g.add_argument("--out", metavar="DIR", help="where the files go")
    p.set_defaults(func=cmd_render)


def cmd_render(args: argparse.Namespace) -> int:
    if args.pipeline:
        return _render_repository(args)
    given = [flag for dest, flag in _PROJECT_FLAGS.items() if getattr(args, dest) is not None]
    if given:
        raise UsageError(f"{given[0]} needs --pipeline (a repository render)")
    return _render_catalog(args)


def _render_catalog(args: argparse.Namespace) -> int:
    from taskyard.render import emit

    root = Path.cwd()
    engines = [args.engine] if args.engine else None
    if args.check:
        bad = emit.drift(root, engines)
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise TaskyardError(
                f"{len(bad)} rendered file(s) differ from the definitions: {shown}",
                "run `taskyard render`",
            )
        print("rendered files are up to date")
        return 0
    written = emit.write(root, engines)
    print(f"rendered {len(written)} files under {root}")
    return 0


def _check_repo_url(url: str) -> str:
    url = url.strip()
    if not url:
        raise UsageError("--repo-url is empty")
    if urlsplit(url).password is not None:
        # Rendered files are committed and applied: a token in them would leak.
        raise UsageError(
            "--repo-url carries a password; pass the URL without it and give the "
            "credentials through the git-credentials workspace"
        )
    return url


def _values(
    args: argparse.Namespace, declared: set[str], pipeline: str, needed: set[str] | None = None
) -> Values:
    from taskyard.render.values import CATALOG, Values

    if args.check or args.engine:
        raise UsageError("--check and --engine are for the catalog render, not with --pipeline")
    if not args.repo_url:
        raise UsageError("--pipeline needs --repo-url (the repository every run clones)")
    if not args.out:
        raise UsageError("--pipeline needs --out DIR (where the files go)")
    for dest, param in (
        ("model_name", "model-name"),
        ("mlflow_tracking_uri", "mlflow-tracking-uri"),
    ):
        flag = _PROJECT_FLAGS[dest]
        if param in (declared if needed is None else needed) and not getattr(args, dest):
            raise UsageError(f"pipeline {pipeline!r} needs {flag} (its param {param})")
        if param not in declared and getattr(args, dest) is not None:
            raise UsageError(f"pipeline {pipeline!r} has no param {param}: drop {flag}")
    namespace = args.namespace
    if namespace is not None and not _NAMESPACE.match(namespace):
        raise UsageError(f"--namespace {namespace!r} is not a Kubernetes namespace name")
    registry = (args.image_registry or "").strip().rstrip("/")
    if args.image_registry is not None and (not registry or any(c.isspace() for c in registry)):
        raise UsageError(f"--image-registry {args.image_registry!r} is not a registry")
    params = pairs(args.param, "-p")
    for key in ("repo-url", "model-name", "mlflow-tracking-uri"):
        if key in params:
            raise UsageError(f"-p {key}=… : use --{key}")
    if "revision" in params:
        raise UsageError("-p revision=… : the event gives the revision (--branch the schedule's)")
    return Values(
        repo_url=_check_repo_url(args.repo_url),
        model_name=args.model_name or "",
        mlflow_tracking_uri=args.mlflow_tracking_uri or "",
        namespace=namespace or CATALOG.namespace,
        set_namespace=namespace is not None,
        image_registry=registry or CATALOG.image_registry,
        pinned=True,
        params=tuple(params.items()),
    )


def _schedule(args: argparse.Namespace) -> Schedule:
    from taskyard.render.project import Schedule

    cron = Schedule.cron if args.schedule is None else args.schedule.strip()
    if cron and len(cron.split()) != 5:
        raise UsageError(f"--schedule {args.schedule!r} is not a 5-field cron expression")
    branches = tuple(b.strip() for b in args.branch or ["main"])
    if not all(branches):
        raise UsageError("--branch is empty")
    return Schedule(branches=branches, cron=cron)


def _render_repository(args: argparse.Namespace) -> int:
    from taskyard.render import emit, project
    from taskyard.run import load_pipeline

    try:
        spec = load_pipeline(args.pipeline)
    except TaskyardError as e:
        raise UsageError(str(e)) from e
    from taskyard.render._triggers import required_values

    values = _values(args, {p.name for p in spec.params}, spec.name, required_values(spec))
    schedule = _schedule(args)
    try:
        files = project.files(spec, values, schedule)
    except TaskyardError as e:
        raise UsageError(str(e)) from e
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is not a folder")
    written = emit.write_files(out, files)
    print(f"rendered {len(written)} files for pipeline {spec.name!r} under {out}")
    for line in _next_steps(out, spec.name, spec.version, args.namespace):
        print(line)
    return 0


def _next_steps(out: Path, name: str, version: str, namespace: str | None) -> list[str]:
    """The commands that apply the files (the run sample is created, not applied)."""
    base = f"{out}/pipelines/{name}/{version}"
    ns = f" -n {namespace}" if namespace else ""
    lines = [
        "Tekton:",
        f"  kubectl{ns} create secret generic taskyard-webhook --from-literal=secret=$SECRET",
        f"  kubectl apply -R -f {out}/tasks -f {base}/{name}.yaml -f {out}/triggers/tekton",
        f"  kubectl create -f {base}/samples/{name}-run.yaml   # one run now",
        "Argo Workflows + Argo Events:",
        f"  kubectl apply -f {out}/argo -f {out}/triggers/argo-events",
    ]
    if not namespace:
        lines.append(
            "(no --namespace: the objects go where kubectl points; the listener's "
            "ClusterRoleBinding names namespace taskyard)"
        )
    return lines
