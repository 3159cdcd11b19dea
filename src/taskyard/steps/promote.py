"""promote: register the candidate, then move the `champion` alias to it — compare-and-set.

evaluate judged the candidate against one champion version (its ``champion-version`` result,
passed here as ``--expected-champion``). Under the model's lock (``taskyard.locks``) promote
reads ``champion`` again:

- still that version (or still none): register and move the aliases;
- another version (a concurrent run promoted meanwhile): the earlier verdict is stale, so the
  candidate is **judged again** against the new champion, on the same holdout with the same
  thresholds (``evaluate.gate``/``judge``), and promoted only if it still wins; otherwise
  nothing is registered and ``promoted`` is "false". Re-judging instead of refusing is what
  keeps the better of two concurrent candidates, whichever promote runs first.

``--expected-champion any`` skips the check (promoting by hand). Order matters for safety: the
URI is checked, the version registered and READY, and only then do aliases move, so a failure
at any step leaves the aliases as they were. Aliases, not the deprecated stages.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from taskyard import __version__, envs
from taskyard.errors import StepError
from taskyard.locks import model_lock
from taskyard.steps import _cli, _mlflow, evaluate
from taskyard.steps._mlflow import current_alias, one_line, registry_client
from taskyard.steps._results import write_results

STEP = "promote"
READY_TIMEOUT_S = 300.0


ANY = "any"


def build_parser() -> argparse.ArgumentParser:
    p = _cli.parser(STEP, "Register a model version and move the champion alias to it.")
    p.add_argument("--source", type=Path, required=True, help="workspace for the record")
    p.add_argument("--model-uri", required=True, help="model to register (runs:/… or models:/…)")
    p.add_argument("--model-name", required=True, help="registered model name")
    p.add_argument("--alias", default="champion")
    p.add_argument("--previous-alias", default="previous-champion")
    # evaluate's champion-version result: "" is a value here (there was no champion).
    _cli.empty_is_a_value(
        p.add_argument(
            "--expected-champion",
            default=ANY,
            help="the champion version the candidate was judged against ('' = none; "
            "'any' = no check)",
        )
    )
    p.add_argument("--subdirectory", default="", help="project folder (to judge again)")
    p.add_argument("--config", default="taskyard.toml", help="project config (to judge again)")
    p.add_argument("--min-score", default="", help="as evaluate's, to judge again")
    p.add_argument("--min-improvement", default="", help="as evaluate's, to judge again")
    p.add_argument("--commit", default="")
    p.add_argument("--data-hash", default="")
    p.add_argument("--eval-run-id", default="")
    return p


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


def rejudge(args: argparse.Namespace, uri: str, champion: str | None) -> evaluate.Decision:
    """The candidate against the champion that is current now, exactly as evaluate judges."""
    g = evaluate.gate(
        args.source,
        args.subdirectory,
        args.config,
        args.model_name,
        args.alias,
        args.min_score,
        args.min_improvement,
    )
    candidate = evaluate.score(g, evaluate.load_model(uri, "candidate"), "candidate")
    return evaluate.judge(g, uri, candidate, champion)


def register(client: Any, name: str, uri: str, tags: dict[str, str], info: Any) -> Any:
    """A READY model version of ``uri`` under ``name``."""
    import mlflow

    # MLflow 3 keeps models as logged models; registering that URI directly avoids its
    # "run has no artifacts at path" detour for runs:/ URIs (same version, same run id).
    target = uri
    if uri.startswith("runs:/") and str(info.model_uri or "").startswith("models:/m-"):
        target = info.model_uri
    try:
        mv = mlflow.register_model(
            target, name, await_registration_for=int(READY_TIMEOUT_S), tags=tags
        )
        wait_ready(client, name, str(mv.version))
    except StepError:
        raise
    except Exception as e:
        raise StepError(f"cannot register {uri!r} as {name!r}: {one_line(e)}") from e
    return mv


def promote(args: argparse.Namespace) -> dict[str, Any]:
    """Do the promotion (or decline it); return the step record (results + details)."""
    import mlflow

    name, uri = args.model_name.strip(), args.model_uri.strip()
    expected = args.expected_champion.strip()
    if not name:
        raise StepError("--model-name is empty")
    if not uri:
        raise StepError("--model-uri is empty")
    if args.alias == args.previous_alias:
        raise StepError(f"--alias and --previous-alias are both {args.alias!r}")
    if expected not in ("", ANY) and not expected.isdigit():
        raise StepError(f"--expected-champion must be a version number, '' or 'any': {expected!r}")
    tracking_uri = _mlflow.setup()
    client = registry_client(tracking_uri)
    try:
        info = mlflow.models.get_model_info(uri)
    except Exception as e:
        raise StepError(f"cannot load model {uri!r}: {one_line(e)}") from e
    tags = lineage_tags(args, info.run_id or "")
    record: dict[str, Any] = {
        "model_name": name,
        "model_uri": uri,
        "alias": args.alias,
        "expected_champion": expected,
        "tracking_uri": tracking_uri,
        "tags": tags,
    }

    with model_lock(name, STEP):
        previous = current_alias(client, name, args.alias)
        if expected != ANY and previous != (expected or None):
            was = f"version {expected}" if expected else "no champion"
            now = f"version {previous}" if previous else "none"
            print(f"{args.alias!r} moved since evaluation ({was} -> {now}): judging again")
            d = rejudge(args, uri, previous)
            record["rejudged"] = {"promote": d.promote, "reasons": d.reasons, "notes": d.notes}
            if not d.promote:
                record["results"] = {
                    "model-version": "",
                    "previous-version": previous or "",
                    "promoted": "false",
                }
                record["declined"] = "; ".join(d.reasons)
                return record
        mv = register(client, name, uri, tags, info)
        version = str(mv.version)
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

    record["results"] = {
        "model-version": version,
        "previous-version": previous or "",
        "promoted": "true",
    }
    record["source"] = mv.source
    record["previous_alias"] = args.previous_alias if previous else ""
    return record


def run(args: argparse.Namespace) -> dict[str, Any]:
    envs.reexec_in_project_env(args.source, args.subdirectory, "promote")
    try:
        record = promote(args)
    except StepError as e:  # leave a record so the report can say why
        _cli.write_record(args.source, STEP, {"results": {}, "error": str(e)})
        raise
    write_results(record["results"])
    _cli.write_record(args.source, STEP, record)
    prev = record["results"]["previous-version"]
    if record["results"]["promoted"] != "true":
        print(f"not promoted: {record['declined']}")
        return record
    print(
        f"{record['model_name']} version {record['results']['model-version']} is now "
        f"{args.alias!r}" + (f" (previous: version {prev})" if prev else "")
    )
    return record


def main() -> None:
    _cli.main(run, build_parser(), preflight=_mlflow.require_tracking_uri)


if __name__ == "__main__":
    main()
