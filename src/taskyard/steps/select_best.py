"""select-best: the best trial of a sweep, read from MLflow, in train's result shape.

The metric of each trial is read from its MLflow run, not from a param: a result string can be
anything an upstream step (or a person re-running a task) wrote, the run is what train logged.
The trials are nested under one parent run (``sweep-<commit8>``) by MLflow's own tag,
``mlflow.parentRunId`` (mlflow/utils/mlflow_tags.py ``MLFLOW_PARENT_RUN_ID``), which its UI
nests runs by.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from taskyard import __version__
from taskyard.errors import StepError
from taskyard.ml.metrics import METRICS
from taskyard.steps import _cli, _mlflow
from taskyard.steps._mlflow import one_line
from taskyard.steps._results import write_results

STEP = "select-best"
PARENT_TAG = "mlflow.parentRunId"


def run_ids(values: list[str]) -> list[str]:
    """The trials' run ids: Tekton expands the array into separate args, Argo and the local
    runner pass one JSON list; both (and a mix) are taken."""
    out: list[str] = []
    for value in values:
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as e:
                raise StepError(f"run ids: not a JSON list: {text[:80]!r} ({e.msg})") from None
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise StepError(f"run ids: expected a JSON list of strings, got {text[:80]!r}")
            out += [i.strip() for i in items if i.strip()]
        elif text:
            out.append(text)
    if not out:
        raise StepError("no trials: select-best got no run ids", "is the train matrix empty?")
    return out


def pick(scores: list[tuple[str, float]], metric: str) -> int:
    """Index of the best score by the metric's direction; ties go to the first trial."""
    better = METRICS[metric].greater_is_better
    best = 0
    for i, (_, value) in enumerate(scores):
        if (value > scores[best][1]) if better else (value < scores[best][1]):
            best = i
    return best


def _runs(client: Any, ids: list[str], metric: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    runs = []
    for rid in ids:
        try:
            r = client.get_run(rid)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise StepError(f"trial run {rid!r} does not exist in MLflow") from None
            raise StepError(f"cannot read trial run {rid!r}: {one_line(e)}") from e
        if metric not in r.data.metrics:
            raise StepError(
                f"trial run {rid} has no metric {metric!r}",
                "was it logged by this project's train task?",
            )
        runs.append(r)
    return runs


def run(args: argparse.Namespace) -> None:
    import mlflow

    ids = run_ids(args.run_ids)
    metric = args.metric_name.strip()
    if not metric:
        from taskyard import project

        metric = project.load(args.source, args.subdirectory, args.config).config.metric_name
    if metric not in METRICS:
        raise StepError(f"unknown metric {metric!r}", "known: " + ", ".join(sorted(METRICS)))
    _mlflow.setup()
    client = mlflow.MlflowClient()
    runs = _runs(client, ids, metric)
    scores = [(r.info.run_id, float(r.data.metrics[metric])) for r in runs]
    best = runs[pick(scores, metric)]
    tags = best.data.tags
    commit = args.commit.strip() or tags.get("taskyard.commit", "")
    trials = [
        {"run_id": r.info.run_id, "params": dict(r.data.params), metric: s}
        for r, (_, s) in zip(runs, scores, strict=True)
    ]
    parent = client.create_run(
        experiment_id=best.info.experiment_id,
        run_name=f"sweep-{commit[:8]}" if commit else "sweep",
        tags={
            "taskyard.step": STEP,
            "taskyard.version": __version__,
            "taskyard.best_run_id": best.info.run_id,
            **({"taskyard.commit": commit, "mlflow.source.git.commit": commit} if commit else {}),
        },
    )
    pid = parent.info.run_id
    try:
        client.log_param(pid, "metric", metric)
        client.log_param(pid, "trials", len(runs))
        client.log_metric(pid, f"best_{metric}", float(best.data.metrics[metric]))
        client.log_dict(pid, {"metric": metric, "best": best.info.run_id, "trials": trials},
                        "sweep.json")  # fmt: skip
        for r in runs:
            client.set_tag(r.info.run_id, PARENT_TAG, pid)
    except Exception:
        client.set_terminated(pid, "FAILED")
        raise
    client.set_terminated(pid, "FINISHED")
    rid = best.info.run_id
    results = {
        "run-id": rid,
        "model-uri": f"runs:/{rid}/model",
        "model-name": tags.get("taskyard.model_name", ""),
        "metric-name": metric,
        "metric-value": f"{best.data.metrics[metric]:.6g}",
        "data-hash": tags.get("taskyard.data_hash", ""),
        "sweep-run-id": pid,
    }
    write_results(results)
    _cli.write_record(args.source, STEP, {"results": results, "trials": trials})
    print(
        f"best of {len(runs)} trials by {metric}: run {rid} ({best.data.metrics[metric]:.4f}); "
        f"sweep run {pid}"
    )


def build_parser() -> argparse.ArgumentParser:
    p = _cli.parser(STEP, "Pick the best trial of a sweep by the project's metric, from MLflow.")
    p.add_argument("--source", type=Path, default=Path("."), help="the source workspace")
    p.add_argument("--subdirectory", default="", help="project folder inside --source")
    p.add_argument("--config", default="taskyard.toml", help="config file in the project")
    p.add_argument("--metric-name", default="", help="metric to select by (default: config's)")
    p.add_argument("--commit", default="", help="git commit (names the sweep run)")
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="trial runs (or one JSON list)")
    return p


if __name__ == "__main__":
    _cli.main(run, build_parser(), preflight=_mlflow.require_tracking_uri)
