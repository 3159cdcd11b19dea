"""deploy: serve a model version, smoke-test it, roll the alias back on any failure.

Targets: ``local`` (a server process on this machine, below), ``kubernetes`` (Deployment +
Service) and ``kserve`` (an InferenceService); the cluster targets are in
:mod:`taskyard.steps._cluster_deploy` and share everything here but the serving itself.

Which version: ``--model-version`` (the pipeline passes promote's result), else the version the
alias points at now. A version given but no longer the alias's (a later run promoted a better
one meanwhile) is **not** deployed: the step says so and succeeds with empty results, so a
slower run never replaces a newer champion's server. Promote and deploy of one model hold the
same lock (``taskyard.locks``), so the check and the serving cannot interleave with another run.

Blue/green on one machine: the new server starts beside the old one (another port), and the old
one is stopped only after the new one answered the smoke request. Only a fixed port that the old
server holds forces stopping it first. The server is recorded (as *starting*) before it is
waited on, so ``taskyard deployments`` lists it even if this step is killed.

Every failure after the version is known rolls the alias back — bad params, a server that does
not come up, a failed smoke request, SIGTERM (engines stop a step with it: Tekton/Argo on
cancel or timeout, the local runner on its timeout, Ctrl-C or death) — and stops the new server:
``champion`` moves back to ``previous-champion`` only while it still points at the version this
step was deploying (compare-and-set), or is removed when there is no previous one.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from taskyard import deployments, probe
from taskyard.errors import StepError
from taskyard.kube.manifests import CLUSTER_TARGETS, TARGETS
from taskyard.locks import model_lock
from taskyard.steps import _cli, _cluster_deploy, _mlflow
from taskyard.steps._mlflow import current_alias, one_line, registry_client
from taskyard.steps._results import write_results

STEP = "deploy"
DEFAULT_HEALTH_TIMEOUT = 120.0
FAILURE_STOP_GRACE = 3.0  # a failing deploy must finish its cleanup inside the engine's grace


def build_parser() -> argparse.ArgumentParser:
    p = _cli.parser(STEP, "Serve a registered model version, smoke-test it, roll back on failure.")
    p.add_argument("--source", type=Path, required=True, help="workspace for the record")
    p.add_argument("--model-name", required=True)
    p.add_argument(
        "--model-version", default="", help="the version to serve; empty: the alias's version"
    )
    p.add_argument(
        "--promoted",
        type=_cli.boolean,
        default=True,
        help="promote's `promoted` result: false (declined) means nothing to deploy",
    )
    p.add_argument("--alias", default="champion")
    p.add_argument("--previous-alias", default="previous-champion")
    p.add_argument("--target", default="local", choices=TARGETS)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", default="0", help="0 or empty: a free port")
    p.add_argument("--keep-serving", type=_cli.boolean, default=True)
    p.add_argument("--health-timeout", default=str(DEFAULT_HEALTH_TIMEOUT), help="seconds")
    _cluster_deploy.add_arguments(p)
    return p


def port_number(value: str) -> int:
    text = value.strip() or "0"
    if not text.isdigit() or int(text) > 65535:
        raise StepError(f"--port must be a port number (0-65535, 0 = any free one), got {value!r}")
    return int(text)


def seconds(flag: str, value: str, default: float) -> float:
    text = value.strip()
    if not text:
        return default
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise StepError(f"{flag} must be a number of seconds > 0, got {value!r}")
    return number


def rollback(client: Any, name: str, alias: str, previous_alias: str, failed: str) -> str:
    """Point ``alias`` back at ``previous_alias``'s version; return what happened, in words."""
    prev = current_alias(client, name, previous_alias) if previous_alias else None
    now = current_alias(client, name, alias)
    if now != failed:  # someone promoted meanwhile: do not clobber their choice
        return f"{alias!r} now points at version {now}; not rolled back"
    if prev is None:
        # The first champion failed: no champion beats a broken one, which the next
        # evaluation would have to beat (and could not even load).
        try:
            client.delete_registered_model_alias(name, alias)
        except Exception as e:
            return f"removing {alias!r} from version {failed} FAILED: {one_line(e)}"
        return f"no {previous_alias!r} to roll back to: removed {alias!r} from version {failed}"
    if prev == failed:
        return f"{previous_alias!r} is version {failed} itself; {alias!r} not moved"
    try:
        client.set_registered_model_alias(name, alias, prev)
    except Exception as e:
        return f"rolling {alias!r} back to version {prev} FAILED: {one_line(e)}"
    return f"rolled {alias!r} back to version {prev}"


def serve(
    args: argparse.Namespace,
    name: str,
    version: str,
    tracking_uri: str,
    started: list[deployments.Deployment],
) -> dict[str, Any]:
    """Start, probe and keep (or stop) the server of ``version``; raise on any failure.

    The server started is appended to ``started`` at once, so the caller can stop it."""
    port = port_number(args.port)
    health_timeout = seconds("--health-timeout", args.health_timeout, DEFAULT_HEALTH_TIMEOUT)
    model_uri = f"models:/{name}/{version}"
    previous = deployments.load(name)
    if previous is not None and not deployments.alive(previous):
        deployments.forget(previous)  # stale record: pid gone or reused
        previous = None
    freed = ""
    if port == 0:
        port = deployments.free_port(args.host)
    elif previous is not None and previous.port == port:
        # Same fixed port: no blue/green possible, the old server must go first.
        deployments.stop_deployment(previous)
        freed = f"the previous server on port {port} was stopped to free it"
        previous = None
    if not deployments.port_free(args.host, port):
        raise StepError(f"port {port} on {args.host} is already in use")

    payload = probe.smoke_payload(model_uri)
    try:
        dep, proc = deployments.start(
            name=name,
            model=name,
            version=version,
            alias=args.alias,
            model_uri=model_uri,
            host=args.host,
            port=port,
            tracking_uri=tracking_uri,
        )
        started.append(dep)
        print(f"serving {model_uri} at {dep.url} (pid {dep.pid}, log {dep.log})", flush=True)
        probe.wait_healthy(dep, proc, health_timeout)
        answer = probe.smoke(dep, payload)
    except StepError as e:
        raise StepError(f"{e} ({freed})" if freed else str(e)) from e

    replaced = ""
    if args.keep_serving and os.environ.get("TASKYARD_CONTAINER"):
        print(
            "note: in a container the server lives only as long as this task; "
            "keep-serving=true keeps it with --executor subprocess",
            flush=True,
        )
    if args.keep_serving:
        deployments.commit(dep)
        if previous is not None:
            deployments.stop_deployment(previous)
            replaced = previous.version
    else:
        # A smoke-only run: stop the new server, leave whatever served before alone.
        deployments.stop_deployment(dep)
    return {
        "results": {"url": dep.url, "model-version": version, "smoke-prediction": answer},
        "deployment": dep.to_dict(),
        "kept_serving": bool(args.keep_serving),
        "replaced_version": replaced,
    }


def cluster_uri(args: argparse.Namespace, tracking_uri: str) -> None:
    """The model server's pods load ``models:/`` through this URI: it must be a server."""
    if args.model_source == "mlflow" and not tracking_uri.startswith(("http://", "https://")):
        raise StepError(
            f"--target {args.target}: the model server loads the model through MLflow, but "
            f"the tracking URI {tracking_uri!r} is no server its pods can reach (use the "
            "cluster's MLflow, http://mlflow.<namespace>.svc.cluster.local:5000)"
        )


def skipped(args: argparse.Namespace, why: str) -> dict[str, Any]:
    return {
        "results": {"url": "", "model-version": "", "smoke-prediction": ""},
        "skipped": f"{why}: not deployed",
        "target": args.target,
    }


def deploy(args: argparse.Namespace) -> dict[str, Any]:
    """Do the deployment; return the step record. Failures raise with the rollback outcome."""
    name = args.model_name.strip()
    if not name:
        raise StepError("--model-name is empty")
    given = args.model_version.strip()
    if not args.promoted:
        # Not a `when` gate: on Argo a when on a skipped task's output is a terminal error
        # (v4.1.2 util/template/simple_template.go: "absent optional"), and promote is skipped
        # whenever evaluate says no. A param is read the same on every engine.
        return skipped(args, "promote declined the candidate (judged again): nothing to deploy")
    tracking_uri = _mlflow.setup()
    client = registry_client(tracking_uri)
    with model_lock(name, STEP):
        champion = current_alias(client, name, args.alias)
        if given and champion != given:
            now = f"version {champion}" if champion else "no version"
            return skipped(args, f"version {given} is no longer {args.alias!r} ({now} is)")
        version = given or champion
        if version is None:
            raise StepError(f"registered model {name!r} has no alias {args.alias!r} to deploy")
        started: list[deployments.Deployment] = []
        try:
            if args.target in CLUSTER_TARGETS:
                cluster_uri(args, tracking_uri)
                record = _cluster_deploy.serve(args, client, name, version, tracking_uri)
            else:
                record = serve(args, name, version, tracking_uri, started)
        except BaseException as e:
            with _cli.uninterrupted():  # the registry first, then the server we started
                outcome = rollback(client, name, args.alias, args.previous_alias, version)
                for dep in started:
                    deployments.stop_deployment(dep, FAILURE_STOP_GRACE)
            if isinstance(e, StepError):
                raise StepError(f"deploy of {name} version {version} failed: {e}; {outcome}") from e
            print(f"deploy of {name} version {version} interrupted; {outcome}", file=sys.stderr)
            raise
    return {**record, "target": args.target, "tracking_uri": tracking_uri}


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        record = deploy(args)
    except StepError as e:  # leave a record so the report can say what happened
        _cli.write_record(args.source, STEP, {"results": {}, "error": str(e)})
        raise
    write_results(record["results"])
    _cli.write_record(args.source, STEP, record)
    if "skipped" in record:
        print(f"skipped: {record['skipped']}")
        return record
    results = record["results"]
    if "cluster" in record:
        where = f"{record['target']}, namespace {record['cluster']['namespace']}"
        print(f"{args.model_name} version {results['model-version']} serving at {results['url']} "
              f"({where})")  # fmt: skip
        print(f"smoke prediction: {results['smoke-prediction']}")
        return record
    dep = record["deployment"]
    state = "serving" if record["kept_serving"] else "smoke-tested and stopped"
    print(f"{dep['model']} version {dep['version']} {state} at {dep['url']}")
    print(f"smoke prediction: {record['results']['smoke-prediction']}")
    return record


def main() -> None:
    _cli.main(run, build_parser(), preflight=_mlflow.require_tracking_uri)


if __name__ == "__main__":
    main()
