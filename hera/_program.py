"""What every Hera program here shares: build from the spec, then print or submit.

The programs are thin on purpose: the WorkflowTemplate comes from ``taskyard.render.argo`` (the
same code ``taskyard render`` uses for ``hera/*.yaml``); the flags only choose cluster details.
Submitting needs an Argo Server (``--host``); printing needs nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from hera.workflows import Parameter, Workflow, WorkflowsService
from hera.workflows.models import Toleration, WorkflowTemplateRef

from taskyard.catalog import get_pipeline
from taskyard.errors import TaskyardError
from taskyard.render import argo, argo_files
from taskyard.spec import PipelineSpec


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _toleration(text: str) -> Toleration:
    """``KEY[=VALUE]:EFFECT`` -> a toleration (``Exists`` without a value)."""
    head, sep, effect = text.rpartition(":")
    if not sep or not head:
        raise argparse.ArgumentTypeError(f"expected KEY[=VALUE]:EFFECT, got {text!r}")
    key, eq, value = head.partition("=")
    if eq:
        return Toleration(key=key, operator="Equal", value=value, effect=effect)
    return Toleration(key=key, operator="Exists", effect=effect)


def _actions(p: argparse.ArgumentParser, actions: dict[str, str]) -> None:
    """``--print`` / ``--submit`` / …: one of them, stored as ``args.action``."""
    group = p.add_mutually_exclusive_group()
    for name, help_text in actions.items():
        group.add_argument(
            f"--{name}", dest="action", action="store_const", const=name, help=help_text
        )


def _param_flag(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument(
        "-p",
        "--param",
        type=_pair,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=help_text,
    )


def _service_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Argo Server (for --submit)")
    g.add_argument("--host", default=os.environ.get("ARGO_SERVER_URL"), help="Argo Server URL")
    g.add_argument("--token", default=os.environ.get("ARGO_TOKEN"), help="`argo auth token`")
    g.add_argument("--namespace", "-n", default=os.environ.get("ARGO_NAMESPACE", "argo"))
    g.add_argument("--insecure", action="store_true", help="skip TLS verification")


def _service(args: argparse.Namespace) -> WorkflowsService:
    if not args.host:
        raise TaskyardError("--submit needs --host (or ARGO_SERVER_URL): the Argo Server URL")
    return WorkflowsService(
        host=args.host, token=args.token, namespace=args.namespace, verify_ssl=not args.insecure
    )


def _run_params(spec: PipelineSpec, pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    known = {p.name for p in spec.params}
    values = dict(pairs)
    for key in values:
        if key not in known:
            raise TaskyardError(
                f"pipeline {spec.name!r} has no param {key!r} (params: {', '.join(sorted(known))})"
            )
    missing = [p.name for p in spec.params if p.required and p.name not in values]
    if missing:
        raise TaskyardError(f"required param {missing[0]!r} is not set: add -p {missing[0]}=...")
    return values


def template_options(args: argparse.Namespace) -> argo.Options:
    defaults = argo.Options()
    selector = dict(args.gpu_node_selector) if args.gpu_node_selector else None
    return argo.Options(
        name=args.name,
        source_size=args.source_size or defaults.source_size,
        storage_class=args.storage_class,
        service_account=args.service_account or defaults.service_account,
        memoize_train=args.memoize_train,
        secrets=dict(args.secret or ()),
        gpu_node_selector=(
            {} if args.no_gpu_node_selector else selector or defaults.gpu_node_selector
        ),
        gpu_tolerations=(
            ()
            if args.no_gpu_tolerations
            else tuple(args.gpu_toleration or defaults.gpu_tolerations)
        ),
    )


def pipeline_main(pipeline: str, argv: Sequence[str] | None = None) -> int:
    """``python hera/<pipeline>.py [--print | --print-run | --submit] ...``"""
    spec = get_pipeline(pipeline)
    p = argparse.ArgumentParser(
        prog=f"hera/{pipeline.replace('-', '_')}.py",
        description=f"The {pipeline!r} pipeline as an Argo WorkflowTemplate, built with Hera.",
    )
    _actions(
        p,
        {
            "print": "print the WorkflowTemplate YAML (the default)",
            "print-run": "print the Workflow a --submit would create (for `kubectl create -f -`)",
            "submit": "create or update the WorkflowTemplate, then submit a run of it",
        },
    )
    _param_flag(p, "a pipeline param of the run (repeatable)")
    g = p.add_argument_group("template (a fork renders under --name)")
    g.add_argument("--name", help=f"template name (default {pipeline!r})")
    g.add_argument("--source-size", help="size of the per-run `source` PVC (default 2Gi)")
    g.add_argument("--storage-class", help="storage class of the `source` PVC")
    g.add_argument(
        "--service-account",
        help="one service account for every task pod (default: each task kind's, from "
        f"deploy/namespace/rbac.yaml; the executor keeps {argo.WORKFLOW_SERVICE_ACCOUNT!r}, "
        "from hera/rbac.yaml)",
    )
    g.add_argument(
        "--secret",
        type=_pair,
        action="append",
        metavar="WORKSPACE=SECRET",
        help="Secret for an optional workspace (default: a Secret of its name)",
    )
    g.add_argument(
        "--memoize-train",
        action="store_true",
        help="cache train outputs keyed on commit + params (ConfigMap, < 1 MB)",
    )
    g.add_argument(
        "--gpu-node-selector",
        type=_pair,
        action="append",
        metavar="LABEL=VALUE",
        help="node selector of GPU tasks (replaces nvidia.com/gpu.present=true)",
    )
    g.add_argument("--no-gpu-node-selector", action="store_true")
    g.add_argument(
        "--gpu-toleration",
        type=_toleration,
        action="append",
        metavar="KEY[=VALUE]:EFFECT",
        help="toleration of GPU tasks (replaces nvidia.com/gpu:NoSchedule)",
    )
    g.add_argument("--no-gpu-tolerations", action="store_true")
    _service_flags(p)
    args = p.parse_args(argv)
    try:
        template = argo.workflow_template(spec, template_options(args))
        name = template.name
        run = None
        if args.action in ("print-run", "submit"):
            run = Workflow(
                generate_name=f"{name}-",
                workflow_template_ref=WorkflowTemplateRef(name=name),
                arguments=[
                    Parameter(name=k, value=v) for k, v in _run_params(spec, args.param).items()
                ]
                or None,
            )
        if args.action == "print-run":
            sys.stdout.write(run.to_yaml(allow_unicode=True, width=100))  # type: ignore[union-attr]
        elif args.action == "submit":
            service = _service(args)
            template.workflows_service = service
            template.namespace = args.namespace
            template.update()  # creates it when missing
            run.workflows_service = service  # type: ignore[union-attr]
            run.namespace = args.namespace  # type: ignore[union-attr]
            created = run.create()  # type: ignore[union-attr]
            print(f"submitted {args.namespace}/{created.metadata.name}")
        else:
            sys.stdout.write(template.to_yaml(allow_unicode=True, width=100))
    except TaskyardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cron_main(pipeline: str, argv: Sequence[str] | None = None) -> int:
    """``python hera/<pipeline>_cron.py [--print | --submit] ...``"""
    spec = get_pipeline(pipeline)
    defaults = argo_files.cron_options(pipeline)
    p = argparse.ArgumentParser(
        prog=f"hera/{pipeline.replace('-', '_')}_cron.py",
        description=f"A CronWorkflow running the {pipeline!r} WorkflowTemplate by reference.",
    )
    _actions(
        p,
        {
            "print": "print the CronWorkflow YAML (the default)",
            "submit": "create or update the CronWorkflow (the template must exist)",
        },
    )
    _param_flag(p, "a pipeline param of every scheduled run")
    p.add_argument("--name", help=f"CronWorkflow name (default {pipeline}-cron)")
    p.add_argument("--template", help=f"WorkflowTemplate to run, e.g. a fork (default {pipeline})")
    p.add_argument(
        "--schedule", action="append", help=f"cron line (default {defaults.schedules[0]!r})"
    )
    p.add_argument("--timezone", default=defaults.timezone)
    p.add_argument(
        "--concurrency-policy",
        choices=("Forbid", "Replace", "Allow"),
        default=defaults.concurrency_policy,
    )
    _service_flags(p)
    args = p.parse_args(argv)
    try:
        arguments = dict(defaults.arguments)
        arguments.update(_run_params(spec, [*arguments.items(), *args.param]))
        cron = argo.cron_workflow(
            spec,
            argo.CronOptions(
                name=args.name,
                template=args.template,
                schedules=tuple(args.schedule or defaults.schedules),
                timezone=args.timezone,
                concurrency_policy=args.concurrency_policy,
                arguments=arguments,
            ),
        )
        if args.action == "submit":
            cron.workflows_service = _service(args)
            cron.namespace = args.namespace
            cron.update()  # creates it when missing
            print(f"scheduled {args.namespace}/{cron.name}")
        else:
            sys.stdout.write(cron.to_yaml(allow_unicode=True, width=100))
    except TaskyardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
