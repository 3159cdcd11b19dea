"""deploy: serve the alias's version locally, smoke-test it, roll the alias back on failure.

Blue/green on one machine: the new server starts beside the old one (another port), and the old
one is stopped only after the new one answered the smoke request. Only a fixed port that the old
server holds forces stopping it first. The served URI is ``models:/NAME/VERSION`` (the version
the alias resolved to), so the record and the rollback talk about exactly what ran.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from taskyard import deployments
from taskyard.errors import StepError
from taskyard.steps import _cli, _mlflow
from taskyard.steps._results import write_results
from taskyard.steps.promote import current_alias, one_line, registry_client

STEP = "deploy"
TARGETS = ("local",)


def build_parser() -> argparse.ArgumentParser:
    p = _cli.parser(STEP, "Serve a registered model's alias, smoke-test it, roll back on failure.")
    p.add_argument("--source", type=Path, required=True, help="workspace for the record")
    p.add_argument("--model-name", required=True)
    p.add_argument("--alias", default="champion")
    p.add_argument("--previous-alias", default="previous-champion")
    p.add_argument("--target", default="local")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--keep-serving", type=_cli.boolean, default=True)
    p.add_argument("--health-timeout", type=float, default=120.0)
    return p


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


def deploy(args: argparse.Namespace) -> dict[str, Any]:
    """Do the deployment; return the step record. Failures raise with the rollback outcome."""
    if args.target != "local":
        raise StepError(
            f"target {args.target!r} is not supported by this step (supported: "
            f"{', '.join(TARGETS)}); the Kubernetes target is rendered, not run here"
        )
    name = args.model_name.strip()
    if not name:
        raise StepError("--model-name is empty")
    if args.port < 0 or args.port > 65535:
        raise StepError(f"--port {args.port} is not a port number")
    tracking_uri = _mlflow.setup()
    client = registry_client(tracking_uri)
    version = current_alias(client, name, args.alias)
    if version is None:
        raise StepError(f"registered model {name!r} has no alias {args.alias!r} to deploy")
    model_uri = f"models:/{name}/{version}"

    with deployments.lock(name):
        previous = deployments.load(name)
        if previous is not None and not deployments.alive(previous):
            deployments.forget(previous)  # stale record: pid gone or reused
            previous = None
        port, freed = args.port, ""
        if port == 0:
            port = deployments.free_port(args.host)
        elif previous is not None and previous.port == port:
            # Same fixed port: no blue/green possible, the old server must go first.
            deployments.stop_deployment(previous)
            freed = f" (the previous server on port {port} was stopped to free it)"
            previous = None
        if not deployments.port_free(args.host, port):
            raise StepError(f"port {port} on {args.host} is already in use")

        dep = None
        try:
            payload = deployments.smoke_payload(model_uri)
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
            print(f"serving {model_uri} at {dep.url} (pid {dep.pid}, log {dep.log})", flush=True)
            deployments.wait_healthy(dep, proc, args.health_timeout)
            answer = deployments.smoke(dep, payload)
        except StepError as e:
            if dep is not None:
                deployments.stop_process_group(dep.pgid, dep.pid)
            outcome = rollback(client, name, args.alias, args.previous_alias, version)
            raise StepError(
                f"deploy of {name} version {version} failed: {e}; {outcome}{freed}"
            ) from e
        except BaseException:
            if dep is not None:  # interrupted: never leave an unrecorded server behind
                deployments.stop_process_group(dep.pgid, dep.pid)
            raise

        replaced = ""
        if args.keep_serving and os.environ.get("TASKYARD_CONTAINER"):
            print(
                "note: in a container the server lives only as long as this task; "
                "keep-serving=true keeps it with --executor subprocess",
                flush=True,
            )
        if args.keep_serving:
            deployments.save(dep)
            if previous is not None:
                deployments.stop_deployment(previous)
                replaced = previous.version
        else:
            # A smoke-only run: stop the new server, leave whatever served before alone.
            deployments.stop_process_group(dep.pgid, dep.pid)

    results = {"url": dep.url, "model-version": version, "smoke-prediction": answer}
    return {
        "results": results,
        "deployment": dep.to_dict(),
        "kept_serving": bool(args.keep_serving),
        "replaced_version": replaced,
        "target": args.target,
        "tracking_uri": tracking_uri,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        record = deploy(args)
    except StepError as e:  # leave a record so the report can say what happened
        _cli.write_record(args.source, STEP, {"results": {}, "error": str(e)})
        raise
    write_results(record["results"])
    _cli.write_record(args.source, STEP, record)
    dep = record["deployment"]
    state = "serving" if record["kept_serving"] else "smoke-tested and stopped"
    print(f"{dep['model']} version {dep['version']} {state} at {dep['url']}")
    print(f"smoke prediction: {record['results']['smoke-prediction']}")
    return record


def main() -> None:
    _cli.main(run, build_parser())


if __name__ == "__main__":
    main()
