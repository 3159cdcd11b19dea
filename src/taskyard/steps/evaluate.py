"""evaluate: score the candidate and the champion on the same holdout, and decide.

Promote when the candidate meets the absolute threshold (direction-aware) AND either there is
no champion, or it beats the champion strictly and by at least ``min-improvement``. A tie keeps
the champion: retraining the same commit must not churn the registry.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from taskyard import __version__, envs, project
from taskyard.errors import StepError
from taskyard.ml.metrics import METRICS, TOLERANCE, Metric, evaluate
from taskyard.steps import _cache, _cli, _mlflow
from taskyard.steps._results import write_result, write_results
from taskyard.steps._store_read import Reader

STEP = "evaluate"
REPORT = f"{_cli.ARTIFACTS}/evaluation.md"
# The entry tag for what the candidate's score depends on: the decision's inputs but the
# champion (see :func:`judged_as_champion`).
SCORE_TAG = "taskyard.cache.score-key"
OTHER_DATA = "the candidate was trained on different data than this holdout comes from"


@dataclass
class Decision:
    model_name: str
    metric: str
    greater_is_better: bool
    candidate_uri: str
    candidate_score: float
    min_score: float | None
    min_improvement: float
    champion_alias: str
    champion_version: str | None = None
    champion_score: float | None = None
    improvement: float | None = None
    promote: bool = False
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    holdout_rows: int = 0
    data_hash: str = ""


def _number(flag: str, value: str, default: float | None) -> float | None:
    """Empty flag: the config's value; otherwise a number."""
    if not value.strip():
        return default
    try:
        return float(value)
    except ValueError:
        raise StepError(f"{flag}: expected a number, got {value!r}") from None


def load_model(uri: str, what: str) -> Any:
    import mlflow

    try:
        return mlflow.pyfunc.load_model(uri)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StepError(f"cannot load the {what} model {uri}: {first}") from None


def decide(d: Decision, metric: Metric) -> Decision:
    """Fill in ``promote`` and the reasons, from the scores and thresholds already in ``d``."""
    cmp, name = metric.comparator, d.metric
    ok = True
    if d.min_score is None:
        d.reasons.append("no absolute threshold is set")
    elif metric.meets(d.candidate_score, d.min_score):
        d.reasons.append(f"candidate {name} {d.candidate_score:.4f} {cmp} {d.min_score:g}")
    else:
        ok = False
        d.reasons.append(
            f"candidate {name} {d.candidate_score:.4f} misses the threshold {cmp} {d.min_score:g}"
        )
    if d.champion_score is None:
        d.reasons.append(
            "there is no champion to beat"
            if d.champion_version is None
            else f"champion v{d.champion_version} cannot be scored here: judged on the threshold"
        )
    else:
        gain = metric.improvement(d.candidate_score, d.champion_score)
        d.improvement = gain
        vs = f"champion v{d.champion_version} ({d.champion_score:.4f})"
        if gain <= TOLERANCE:
            ok = False
            word = "ties" if abs(gain) <= TOLERANCE else "is worse than"
            d.reasons.append(f"candidate {word} {vs}; the champion stays")
        elif gain < d.min_improvement - TOLERANCE:
            ok = False
            d.reasons.append(
                f"candidate beats {vs} by {gain:.4f}, less than the minimum {d.min_improvement:g}"
            )
        else:
            d.reasons.append(f"candidate beats {vs} by {gain:.4f} (minimum {d.min_improvement:g})")
    d.promote = ok
    return d


def markdown(d: Decision) -> str:
    direction = "higher is better" if d.greater_is_better else "lower is better"
    cmp = ">=" if d.greater_is_better else "<="
    champion = (
        "none" if d.champion_version is None else f"v{d.champion_version} (`@{d.champion_alias}`)"
    )
    rows = [
        ("Registered model", f"`{d.model_name}`"),
        ("Metric", f"`{d.metric}` ({direction})"),
        ("Candidate", f"`{d.candidate_uri}`"),
        ("Candidate score", f"{d.candidate_score:.4f}"),
        ("Champion", champion),
        ("Champion score", "n/a" if d.champion_score is None else f"{d.champion_score:.4f}"),
        ("Improvement", "n/a" if d.improvement is None else f"{d.improvement:+.4f}"),
        ("Threshold", "none" if d.min_score is None else f"{cmp} {d.min_score:g}"),
        ("Minimum improvement", f"{d.min_improvement:g}"),
        ("Holdout rows", str(d.holdout_rows)),
        ("Data hash", f"`{d.data_hash[:12]}`"),
    ]
    verdict = "PROMOTE" if d.promote else "DO NOT PROMOTE"
    lines = [f"# Evaluation of `{d.model_name}`: **{verdict}**", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "## Why", "", *[f"- {r}" for r in d.reasons]]
    if d.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in d.notes]]
    return "\n".join(lines) + "\n"


def _candidate_data_hash(uri: str) -> str | None:
    """The data hash the candidate was trained with, when it is a run's model."""
    from mlflow import MlflowClient

    if not uri.startswith("runs:/"):
        return None
    try:
        run = MlflowClient().get_run(uri.removeprefix("runs:/").split("/")[0])
    except Exception:
        return None
    tags = run.data.tags
    return tags.get("taskyard.data_hash") or tags.get("data_hash")  # before 0.1.0: untagged name


@dataclass
class Gate:
    """Everything a decision needs but the champion: so promote can judge again, identically."""

    model_name: str
    alias: str
    metric: Metric
    min_score: float | None
    min_improvement: float
    data_hash: str
    experiment: str
    proj: project.Project
    frame: Any

    @property
    def root(self) -> Path:
        """The project folder (what the cache key hashes)."""
        return self.proj.root

    @cached_property
    def split(self) -> project.Holdout:
        """The holdout, split on first use: the split imports scikit-learn, a cache hit not."""
        return project.holdout(self.proj, self.frame)


def gate(
    source: Path,
    subdirectory: str,
    config: str,
    model_name: str,
    alias: str,
    min_score: str,
    min_improvement: str,
) -> Gate:
    """The project's holdout and thresholds, flags over config (empty flag: the config's)."""
    proj = project.load(source, subdirectory, config)
    cfg = proj.config
    metric = METRICS[cfg.metric_name]
    low = _number("--min-score", min_score, cfg.evaluate.min_score)
    gain = _number("--min-improvement", min_improvement, cfg.evaluate.min_improvement)
    assert gain is not None
    if gain < 0:
        raise StepError(f"--min-improvement must be >= 0, got {gain:g}")
    frame = project.load_frame(proj)
    return Gate(
        model_name=model_name.strip() or cfg.project.name,
        alias=alias.strip() or "champion",
        metric=metric,
        min_score=low,
        min_improvement=gain,
        data_hash=project.data_hash(frame),
        experiment=cfg.experiment,
        proj=proj,
        frame=frame,
    )


def score(g: Gate, model: Any, what: str) -> float:
    try:
        return evaluate(model, g.metric.name, g.split.x_test, g.split.y_test)
    except Exception as e:
        raise StepError(f"cannot score the {what} on the holdout: {e}") from None


def _decision(g: Gate, uri: str, score_: float, champion: str | None, rows: int) -> Decision:
    """A decision on ``g``'s thresholds, not taken yet (:func:`decide`)."""
    return Decision(
        model_name=g.model_name,
        metric=g.metric.name,
        greater_is_better=g.metric.greater_is_better,
        candidate_uri=uri,
        candidate_score=score_,
        min_score=g.min_score,
        min_improvement=g.min_improvement,
        champion_alias=g.alias,
        holdout_rows=rows,
        data_hash=g.data_hash,
        champion_version=champion,
    )


def judge(g: Gate, candidate_uri: str, candidate_score: float, champion: str | None) -> Decision:
    """Candidate (already scored) against ``champion`` (a version or None) on ``g``'s holdout."""
    d = _decision(g, candidate_uri, candidate_score, champion, len(g.split.x_test))
    if champion is not None:
        model = load_model(f"models:/{g.model_name}/{champion}", "champion")
        try:
            d.champion_score = evaluate(model, g.metric.name, g.split.x_test, g.split.y_test)
        except Exception as e:  # e.g. the features changed since the champion was trained
            d.notes.append(f"the champion cannot score this holdout ({type(e).__name__}: {e})")
    trained_on = _candidate_data_hash(candidate_uri)
    if trained_on and trained_on != d.data_hash:
        d.notes.append(OTHER_DATA)
    return decide(d, g.metric)


def run(args: argparse.Namespace) -> None:
    envs.reexec_in_project_env(args.source, args.subdirectory, "evaluate")
    uri = args.model_uri.strip()
    if not uri:
        raise StepError("--model-uri is required")
    g = gate(
        args.source,
        args.subdirectory,
        args.config,
        args.model_name,
        args.champion_alias,
        args.min_score,
        args.min_improvement,
    )
    metric, model_name, alias = g.metric, g.model_name, g.alias
    min_score, min_improvement = g.min_score, g.min_improvement

    # The cache first, before mlflow is imported: a hit needs none of it.
    reader = _cache.store_reader(_mlflow.configure())
    champion = reader.alias_version(model_name, alias)
    cached = _cache.open_cache(STEP, args, args.source, _inputs(reader, g, uri, champion),
                               reader=reader)  # fmt: skip
    cached.tags[SCORE_TAG] = score_key(cached.material)
    if cached.replay() or judged_as_champion(args, g, uri, champion, cached):
        return
    import mlflow

    _mlflow.setup()
    experiment_id = _mlflow.experiment(g.experiment)
    cand_score = score(g, load_model(uri, "candidate"), "candidate")
    d = judge(g, uri, cand_score, champion)

    files = _report(args.source, d)

    tags = {
        "taskyard.step": STEP,
        "taskyard.version": __version__,
        "taskyard.decision": "promote" if d.promote else "keep",
        "taskyard.candidate_uri": d.candidate_uri,
        "taskyard.model_name": model_name,
        "taskyard.data_hash": d.data_hash,
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=STEP, tags=tags) as active:
        eval_run_id = active.info.run_id
        mlflow.log_params(
            {
                "metric": metric.name,
                "min_score": "" if min_score is None else min_score,
                "min_improvement": min_improvement,
                "champion_alias": alias,
                "champion_version": d.champion_version or "",
            }
        )
        scores = {f"candidate_{metric.name}": d.candidate_score, "promote": float(d.promote)}
        if d.champion_score is not None:
            scores[f"champion_{metric.name}"] = d.champion_score
        if d.improvement is not None:
            scores["improvement"] = d.improvement
        mlflow.log_metrics(scores)
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="evaluation")

    results, record = _results(args.source, d, eval_run_id)
    cached.store(results, [record, *files], origin=eval_run_id)
    verdict = "promote" if d.promote else "do not promote"
    print(f"{verdict}: " + "; ".join(d.reasons))


def _report(source: Path, d: Decision) -> list[Path]:
    """evaluation.json and evaluation.md in the workspace."""
    out = _cli.artifacts_dir(source)
    (out / "evaluation.json").write_text(json.dumps(asdict(d), indent=2) + "\n")
    (out / "evaluation.md").write_text(markdown(d))
    return [out / "evaluation.json", out / "evaluation.md"]


def _results(source: Path, d: Decision, eval_run_id: str) -> tuple[dict[str, str], Path]:
    """Write the step's results and its record: both."""
    results = {
        "promote": "true" if d.promote else "false",
        "metric-name": d.metric,
        "candidate-score": f"{d.candidate_score:.6g}",
        "champion-score": "" if d.champion_score is None else f"{d.champion_score:.6g}",
        "champion-version": d.champion_version or "",
        "eval-run-id": eval_run_id,
        "report": REPORT,
    }
    write_results(results)
    return results, _cli.write_record(source, STEP, {"results": results, **asdict(d)})


def score_key(material: dict[str, Any]) -> str:
    """What the candidate's score on the holdout depends on: the decision's key material (the
    step, its code and libraries, the params, the project, the data) without the champion."""
    inputs = {k: v for k, v in material["inputs"].items() if k != "champion"}
    return _cache.key_of({**material, "inputs": inputs, "of": "candidate-score"})


def is_registered_from(reader: Reader, name: str, version: str, candidate: str) -> bool:
    """Whether version ``version`` of ``name`` is the candidate itself (registered from it)."""
    try:
        v = reader.version(name, version)
        source = v["source"].rstrip("/")
        if source == candidate.rstrip("/"):
            return True
        if not (candidate.startswith("runs:/") and source.startswith("models:/m-")):
            return False
        run, _, path = candidate.removeprefix("runs:/").partition("/")
        # MLflow 3 registers runs:/RUN/PATH as the logged model RUN logged under PATH, source
        # models:/<model_id> (mlflow/tracking/_model_registry/fluent.py, _register_model).
        logged = reader.logged_model(source.removeprefix("models:/"))
    except Exception:  # not answerable here: judge as usual
        return False
    return v["run"] == run and logged == {"run": run, "name": path.strip("/")}


def judged_as_champion(
    args: argparse.Namespace, g: Gate, uri: str, champion: str | None, cached: _cache.StepCache
) -> bool:
    """A candidate that is the champion itself (the run after the one that promoted it, of
    the same commit) ties by definition: decide without loading or scoring either model. Its
    score on this holdout is the one an earlier decision on it computed, found by the score
    key (the same candidate, code, params, project and data); without one it is scored as
    usual. No eval run is logged: results and report say which one scored it. True: done."""
    if champion is None or not cached.enabled:
        return False
    if not is_registered_from(cached.reader, g.model_name, champion, uri):
        return False
    try:
        hit = cached.lookup(SCORE_TAG, cached.tags[SCORE_TAG])
        if hit is None:
            return False
        with tempfile.TemporaryDirectory(prefix="taskyard-cache-") as tmp:
            cached.reader.copy_artifacts(hit.entry, _cache.FILES_DIR, Path(tmp))
            earlier = json.loads(Path(tmp, _cli.ARTIFACTS, "evaluation.json").read_text())
        score_ = float(earlier["candidate_score"])
        rows = int(earlier["holdout_rows"])
        notes = [n for n in earlier.get("notes") or [] if n == OTHER_DATA]
    except Exception as e:  # a score that cannot be read back is scored again
        print(f"warning: cache: cannot read the earlier score, computing: {_mlflow.one_line(e)}",
              flush=True)  # fmt: skip
        return False
    scored_by = hit.results.get("eval-run-id", "")
    d = _decision(g, uri, score_, champion, rows)
    d.champion_score = score_
    d.notes = notes
    d.notes.append(
        f"the candidate is champion v{champion} itself: not scored again; its score on this "
        f"holdout is from eval run {scored_by} (cache entry {hit.entry})"
    )
    decide(d, g.metric)
    _report(args.source, d)
    _results(args.source, d, scored_by)
    write_result(_cache.FROM_RESULT, hit.entry)
    print(
        f"cache: hit for {STEP}: the candidate is champion v{champion} itself, scored by "
        f"eval run {scored_by} (entry {hit.entry}); "
        f"{'promote' if d.promote else 'do not promote'}: " + "; ".join(d.reasons),
        flush=True,
    )
    return True


def _inputs(reader: Reader, g: Gate, candidate: str, champion: str | None) -> dict[str, Any]:
    """What a decision reads besides its params: the code, the holdout, both models (a
    registered version by content: a re-created model reuses version numbers)."""
    inputs: dict[str, Any] = {
        "project": _cache.project_state(g.root),
        "data": g.data_hash,
        "champion": None if champion is None else reader.version(g.model_name, champion),
    }
    if candidate.startswith("models:/") and "@" in candidate:  # an alias moves: pin it
        name, _, cand_alias = candidate.removeprefix("models:/").partition("@")
        version = reader.alias_version(name, cand_alias)
        inputs["candidate"] = version and reader.version(name, version)
    elif re.fullmatch(r"models:/[^/@]+/\d+", candidate):  # a re-created model reuses numbers
        name, _, version = candidate.removeprefix("models:/").rpartition("/")
        try:
            inputs["candidate"] = reader.version(name, version)
        except Exception:  # no such version: loading it fails with the one-line error
            inputs["candidate"] = None
    return inputs


def build_parser() -> argparse.ArgumentParser:
    p = _cli.parser(STEP, "Score the candidate against the champion and decide promotion.")
    p.add_argument("--source", type=Path, default=Path("."), help="the source workspace")
    p.add_argument("--subdirectory", default="", help="project folder inside --source")
    p.add_argument("--config", default="taskyard.toml", help="config file in the project")
    p.add_argument("--model-uri", required=True, help="the candidate (runs:/… or models:/…)")
    p.add_argument("--model-name", default="", help="registered model (default: project name)")
    p.add_argument("--champion-alias", default="champion")
    p.add_argument("--min-score", default="", help="absolute threshold; empty: the config's")
    p.add_argument("--min-improvement", default="", help="minimum gain; empty: the config's")
    _cache.add_flags(p)
    return p


if __name__ == "__main__":
    _cli.main(run, build_parser(), preflight=_mlflow.require_tracking_uri)
