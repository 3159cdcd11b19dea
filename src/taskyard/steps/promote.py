"""promote: register the candidate, then move the `champion` alias to it.

Order matters for safety: the URI is checked, the version registered and READY, and only then
do aliases move, so a failure at any step leaves the registry's aliases as they were.
Aliases, not the deprecated stages.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from taskyard import __version__
from taskyard.errors import StepError
from taskyard.steps import _cli, _mlflow
from taskyard.steps._results import write_results

STEP = "promote"
READY_TIMEOUT_S = 300.0


def build_parser() -> argparse.ArgumentParser:
    p = _cli.parser(STEP, "Register a model version and move the champion alias to it.")
    p.add_argument("--source", type=Path, required=True, help="workspace for the record")
    p.add_argument("--model-uri", required=True, help="model to register (runs:/… or models:/…)")
    p.add_argument("--model-name", required=True, help="registered model name")
    p.add_argument("--alias", default="champion")
    p.add_argument("--previous-alias", default="previous-champion")
    p.add_argument("--commit", default="")
    p.add_argument("--data-hash", default="")
    p.add_argument("--eval-run-id", default="")
    return p


def one_line(err: BaseException) -> str:
    """MLflow errors can span pages; the user gets the first meaningful line."""
    text = str(err).strip() or type(err).__name__
    line = text.splitlines()[0].strip()
    return line if len(line) <= 300 else line[:297] + "..."


def registry_client(tracking_uri: str) -> Any:
    """A client whose registry answered once, so a bad URI fails here with one clear line."""
    import mlflow

    try:
        client = mlflow.MlflowClient()
        client.search_registered_models(max_results=1)
    except Exception as e:
        raise StepError(f"cannot use the model registry at {tracking_uri}: {one_line(e)}") from e
    return client


def current_alias(client: Any, name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise StepError(f"cannot read registered model {name!r}: {one_line(e)}") from e
    version = (model.aliases or {}).get(alias)
    return str(version) if version is not None else None


def lineage_tags(args: argparse.Namespace, source_run_id: str) -> dict[str, str]:
    tags = {
        "taskyard.commit": args.commit.strip(),
        "taskyard.data_hash": args.data_hash.strip(),
        "taskyard.eval_run_id": args.eval_run_id.strip(),
        "taskyard.source_run_id": (source_run_id or "").strip(),
        "taskyard.version": __version__,
    }
    return {k: v for k, v in tags.items() if v}


def wait_ready(client: Any, name: str, version: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Remote registries may register asynchronously; aliases must not point at a PENDING one."""
    deadline = time.monotonic() + timeout
    while True:
        mv = client.get_model_version(name, version)
        status = str(mv.status)
        if status.endswith("READY"):
            return
        if "FAILED" in status:
            raise StepError(
                f"version {version} of {name!r} failed to register: {mv.status_message or status}"
            )
        if time.monotonic() > deadline:
            raise StepError(f"version {version} of {name!r} still {status} after {timeout:.0f}s")
        time.sleep(1.0)


def promote(args: argparse.Namespace) -> dict[str, Any]:
    """Do the promotion; return the step record (results + details)."""
    import mlflow

    name, uri = args.model_name.strip(), args.model_uri.strip()
    if not name:
        raise StepError("--model-name is empty")
    if not uri:
        raise StepError("--model-uri is empty")
    if args.alias == args.previous_alias:
        raise StepError(f"--alias and --previous-alias are both {args.alias!r}")
    tracking_uri = _mlflow.setup()
    client = registry_client(tracking_uri)

    try:
        info = mlflow.models.get_model_info(uri)
    except Exception as e:
        raise StepError(f"cannot load model {uri!r}: {one_line(e)}") from e
    previous = current_alias(client, name, args.alias)
    tags = lineage_tags(args, info.run_id or "")

    # MLflow 3 keeps models as logged models; registering that URI directly avoids its
    # "run has no artifacts at path" detour for runs:/ URIs (same version, same run id).
    target = uri
    if uri.startswith("runs:/") and str(info.model_uri or "").startswith("models:/m-"):
        target = info.model_uri
    try:
        mv = mlflow.register_model(
            target, name, await_registration_for=int(READY_TIMEOUT_S), tags=tags
        )
        version = str(mv.version)
        wait_ready(client, name, version)
    except StepError:
        raise
    except Exception as e:
        raise StepError(f"cannot register {uri!r} as {name!r}: {one_line(e)}") from e

    try:
        # previous-alias first: if the second call fails, the champion is still the old one.
        if previous and previous != version and args.previous_alias:
            client.set_registered_model_alias(name, args.previous_alias, previous)
        client.set_registered_model_alias(name, args.alias, version)
    except Exception as e:
        raise StepError(
            f"registered version {version} of {name!r} but could not move alias "
            f"{args.alias!r}: {one_line(e)}"
        ) from e

    results = {"model-version": version, "previous-version": previous or ""}
    return {
        "results": results,
        "model_name": name,
        "model_uri": uri,
        "source": mv.source,
        "alias": args.alias,
        "previous_alias": args.previous_alias if previous else "",
        "tags": tags,
        "tracking_uri": tracking_uri,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        record = promote(args)
    except StepError as e:  # leave a record so the report can say why
        _cli.write_record(args.source, STEP, {"results": {}, "error": str(e)})
        raise
    write_results(record["results"])
    _cli.write_record(args.source, STEP, record)
    prev = record["results"]["previous-version"]
    print(
        f"{record['model_name']} version {record['results']['model-version']} is now "
        f"{args.alias!r}" + (f" (previous: version {prev})" if prev else "")
    )
    return record


def main() -> None:
    _cli.main(run, build_parser())


if __name__ == "__main__":
    main()
