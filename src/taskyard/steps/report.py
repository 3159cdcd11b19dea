"""report: summarise a run from the records its steps left in ``artifacts/``.

A ``finally`` task: it must never fail because a step failed, was skipped, or left a broken
record (a crashing report would hide the real failure). It exits non-zero only when the
``source`` workspace itself is unusable.

Every record it reads is this run's: git-clone, the first task, empties ``artifacts/`` before
it clones (:func:`taskyard.steps._cli.clear_records`), so a reused PVC's older records are gone.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskyard.errors import StepError
from taskyard.steps import _cli
from taskyard.steps._results import write_results

SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
# Record names are catalog task names; this is the order a summary lists them in.
KNOWN_TASKS = ("git-clone", "run-tests", "train", "train-gpu", "evaluate", "promote", "deploy")
# Both engines' aggregate status vocabularies: Tekton's $(tasks.status), Argo's workflow.status.
STATUS_MEANING = {
    "Succeeded": ("succeeded", "every task succeeded"),
    "Completed": ("succeeded", "every task that ran succeeded; some were skipped"),
    "Failed": ("failed", "at least one task failed"),
    "Error": ("failed", "the workflow errored"),
    "None": ("unknown", "no aggregate status: a task did not finish (cancelled or timed out)"),
}
MAX_TEXT = 200
SECTION_TASKS = {
    "source": ("git-clone",),
    "tests": ("run-tests",),
    "model": ("train", "train-gpu"),
    "evaluation": ("evaluate",),
    "registry": ("promote",),
    "deployment": ("deploy",),
}
ALIASES = {"train-gpu": "train", "train": "train-gpu"}


@dataclass
class Step:
    """One expected or recorded step: the pipeline's name for it and its catalog task."""

    task: str  # catalog task name (the record's name)
    name: str = ""  # the pipeline's name for it (clone, test...); empty when unknown
    record: dict[str, Any] | None = None
    outcome: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} ({self.task})" if self.name and self.name != self.task else self.task

    @property
    def results(self) -> dict[str, Any]:
        res = (self.record or {}).get("results")
        return res if isinstance(res, dict) else {}

    def get(self, key: str) -> Any:
        """A value from the results (``metric-name``) or the details (``metric_name``)."""
        if key in self.results:
            return self.results[key]
        return (self.record or {}).get(key, (self.record or {}).get(key.replace("-", "_")))


@dataclass
class Summary:
    pipeline: str
    run_name: str
    status: str
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)  # records present but unreadable

    def step(self, *tasks: str) -> Step | None:
        for s in self.steps:
            if s.task in tasks and s.record is not None:
                return s
        return None


def text(value: Any, limit: int = MAX_TEXT) -> str:
    """A value as short, single-line text (records may hold anything)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if not isinstance(value, str):
        try:
            value = json.dumps(value, default=str)
        except (TypeError, ValueError):
            value = repr(value)
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 3] + "..."


def cell(value: Any) -> str:
    return text(value).replace("|", "\\|")


def number(value: Any) -> float | None:
    try:
        n = float(value)
    except (TypeError, ValueError):
        return None
    return n if math.isfinite(n) else None


def truthy(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def expected_steps(pipeline: str) -> list[Step]:
    """The non-finally tasks of a catalog pipeline; empty when the name is not in the catalog."""
    try:
        from taskyard.catalog import PIPELINES

        spec = PIPELINES.get(pipeline)
        if spec is None:
            return []
        return [Step(task=t.task.name, name=t.name) for t in spec.tasks]
    except Exception:  # the summary must not depend on the catalog importing cleanly
        return []


def read_records(
    artifacts: Path, problems: list[str], broken: set[str]
) -> dict[str, dict[str, Any]]:
    """Every step record in ``artifacts``; unreadable ones become problems, not errors."""
    records: dict[str, dict[str, Any]] = {}
    if not artifacts.is_dir():
        return records
    for path in sorted(artifacts.glob("*.json")):
        if path.name == SUMMARY_JSON:
            continue
        known = path.stem in KNOWN_TASKS
        try:
            data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError) as e:
            if known:
                problems.append(f"artifacts/{path.name}: unreadable record ({text(str(e), 120)})")
                broken.add(path.stem)
            continue
        is_record = isinstance(data, dict) and isinstance(data.get("results"), dict)
        if known and not is_record:
            problems.append(f"artifacts/{path.name}: not a step record (no `results` object)")
            data = data if isinstance(data, dict) else {}
        if known or is_record:
            records[path.stem] = data
    return records


def outcome(step: Step, summary: Summary) -> str:
    if step.record is None:
        if step.task in summary.broken:
            return "record unreadable (see Problems)"
        decided = summary.step("evaluate")
        if (
            step.task in ("promote", "deploy")
            and decided
            and truthy(decided.get("promote")) is False
        ):
            return "skipped: evaluate decided not to promote"
        return "no record: failed before recording, or skipped"
    status = step.record.get("status")
    if step.record.get("error"):
        return f"failed: {text(step.record['error'], 120)}"
    if step.record.get("declined"):  # promote judged again after a concurrent promotion
        return f"declined: {text(step.record['declined'], 120)}"
    if step.record.get("skipped"):  # deploy of a version that is no longer champion
        return f"skipped: {text(step.record['skipped'], 120)}"
    if step.task == "run-tests":
        failed = number(step.get("failed"))
        if failed:
            return f"failed: {int(failed)} test(s) failed"
    if step.task == "evaluate":
        decision = truthy(step.get("promote"))
        if decision is not None:
            return "promote" if decision else "keep the champion"
    return text(status, 60) if isinstance(status, str) and status else "done"


def build(source: Path, pipeline: str, run_name: str, status: str) -> Summary:
    summary = Summary(pipeline=pipeline, run_name=run_name, status=status)
    records = read_records(source / _cli.ARTIFACTS, summary.problems, summary.broken)
    steps = expected_steps(pipeline)
    listed = {s.task for s in steps}
    extra = [t for t in records if t not in listed and ALIASES.get(t) not in listed]
    steps += [Step(task=t) for t in sorted(extra, key=_order)]
    for s in steps:
        s.record = records.get(s.task)
        if s.record is None and s.task in ALIASES:  # train and train-gpu share one step module
            s.record = records.get(ALIASES[s.task])
    summary.steps = steps
    for s in steps:
        s.outcome = outcome(s, summary)
    return summary


def _order(task: str) -> tuple[int, str]:
    return (KNOWN_TASKS.index(task) if task in KNOWN_TASKS else len(KNOWN_TASKS), task)


def sections(summary: Summary) -> dict[str, dict[str, Any]]:
    """The highlights, engine- and format-neutral (summary.json and the Markdown share them)."""
    out: dict[str, dict[str, Any]] = {}
    if s := summary.step("git-clone"):
        out["source"] = {
            k: s.get(k) for k in ("commit", "url", "revision", "branch", "subject")
        } | {"committer_date": s.get("committer_date")}
    if s := summary.step("run-tests"):
        out["tests"] = {
            k: s.get(k) for k in ("passed", "failed", "skipped", "duration", "report")
        } | {"failed_tests": s.get("failed_tests")}
    if s := summary.step("train", "train-gpu"):
        out["model"] = {
            k: s.get(k)
            for k in ("model-name", "metric-name", "metric-value", "run-id", "model-uri")
        }
    if s := summary.step("evaluate"):
        out["evaluation"] = {
            k: s.get(k)
            for k in (
                "metric-name",
                "candidate-score",
                "champion-score",
                "champion-version",
                "promote",
                "eval-run-id",
                "report",
            )
        }
    if s := summary.step("promote"):
        out["registry"] = {
            k: s.get(k) for k in ("model-version", "previous-version", "promoted", "declined")
        }
        out["registry"]["model-name"] = s.get("model_name") or s.get("model-name")
    if s := summary.step("deploy"):
        out["deployment"] = {
            k: s.get(k) for k in ("url", "model-version", "smoke-prediction", "skipped")
        }
    if "evaluation" in out and isinstance(reasons := summary.step("evaluate").get("reasons"), list):
        out["evaluation"]["reasons"] = reasons
    for key, tasks in SECTION_TASKS.items():
        if key in out and (error := summary.step(*tasks).get("error")):
            out[key]["error"] = error
    return out


def overall(status: str) -> tuple[str, str]:
    if not status.strip():
        return "unknown", "no status given"
    return STATUS_MEANING.get(status.strip(), ("unknown", "status as the engine reported it"))


def markdown(summary: Summary, high: dict[str, dict[str, Any]]) -> str:
    title = " / ".join(x for x in (summary.pipeline, summary.run_name) if x) or "pipeline run"
    kind, meaning = overall(summary.status)
    lines = [
        f"# Run report: {title}",
        "",
        f"**Status:** {summary.status.strip() or 'unknown'} ({meaning})",
        "",
        "| step | outcome |",
        "| --- | --- |",
        *(f"| {cell(s.label)} | {cell(s.outcome)} |" for s in summary.steps),
    ]
    if not summary.steps:
        lines.append("| - | no step left a record |")

    def section(name: str, body: list[str]) -> None:
        lines.extend(["", f"## {name}", "", *body])

    errors = [f"- {key}: {text(v['error'])}" for key, v in high.items() if v.get("error")]
    # a step that recorded only its failure gets the error, not a section of blanks
    high = {
        key: v
        for key, v in high.items()
        if any(x not in (None, "", [], {}) for k, x in v.items() if k != "error")
    }

    if src := high.get("source"):
        where = f" on `{text(src['branch'])}`" if src.get("branch") else ""
        body = [f"- Commit `{text(src['commit'])}`{where}: {text(src['subject'])}"]
        body.append(
            f"- Repository: {text(src['url'])} (revision {text(src['revision'] or 'remote HEAD')})"
        )
        if src.get("committer_date"):
            body.append(f"- Committed: {text(src['committer_date'])}")
        section("Source", body)
    if t := high.get("tests"):
        line = f"- {text(t['passed'])} passed, {text(t['failed'])} failed"
        if t.get("skipped") not in (None, ""):
            line += f", {text(t['skipped'])} skipped"
        if number(t.get("duration")) is not None:
            line += f" in {number(t['duration']):.1f} s"
        body = [line, f"- JUnit report: `{text(t['report'])}`"]
        failed = t.get("failed_tests")
        if isinstance(failed, list) and failed:
            body.append("- Failed: " + ", ".join(f"`{text(x, 120)}`" for x in failed[:20]))
        section("Tests", body)
    if m := high.get("model"):
        body = [f"- {text(m['metric-name'])} = {fmt_num(m['metric-value'])} on the holdout"]
        body.append(f"- Model `{text(m['model-name'])}`, MLflow run `{text(m['run-id'])}`")
        section("Model", body)
    if e := high.get("evaluation"):
        decision = truthy(e.get("promote"))
        verdict = {True: "**promote**", False: "**keep the champion**"}.get(decision, "-")
        if e.get("champion-score") in (None, ""):
            vs = "no champion yet"
        else:
            vs = f"champion {fmt_num(e['champion-score'])} (version {text(e['champion-version'])})"
        body = [
            f"- {text(e['metric-name'])}: candidate {fmt_num(e['candidate-score'])} vs {vs}",
            f"- Decision: {verdict}",
        ]
        for reason in (e.get("reasons") or [])[:10]:
            body.append(f"  - {text(reason)}")
        if e.get("report"):
            body.append(f"- Evaluation report: `{text(e['report'])}`")
        section("Evaluation", body)
    if r := high.get("registry"):
        name = f"`{text(r['model-name'])}` " if r.get("model-name") else ""
        prev = text(r["previous-version"]) if r.get("previous-version") else "none"
        if r.get("declined"):
            body = [f"- {name}not promoted: {text(r['declined'])} (champion: version {prev})"]
        else:
            body = [f"- {name}version {text(r['model-version'])} promoted (previous: {prev})"]
        section("Registry", body)
    if d := high.get("deployment"):
        if d.get("skipped"):
            body = [f"- Not deployed: {text(d['skipped'])}"]
        else:
            body = [
                f"- Serving {text(d['url'])} (version {text(d['model-version'])})",
                f"- Smoke prediction: `{text(d['smoke-prediction'])}`",
            ]
        section("Deployment", body)
    if errors:
        section("Errors recorded by steps", errors)
    missing = [s for s in summary.steps if s.record is None]
    if missing:
        section("Steps without a record", [f"- {s.label}: {s.outcome}" for s in missing])
    if summary.problems:
        section("Problems", [f"- {p}" for p in summary.problems])
    if kind == "unknown" and summary.status.strip() not in ("", "None"):
        section("Note", [f"- Unrecognised status {summary.status.strip()!r}, shown as given."])
    return "\n".join(lines) + "\n"


def fmt_num(value: Any) -> str:
    n = number(value)
    return f"{n:.4g}" if n is not None else text(value)


def as_json(summary: Summary, high: dict[str, dict[str, Any]]) -> dict[str, Any]:
    kind, meaning = overall(summary.status)
    return {
        "pipeline": summary.pipeline,
        "run_name": summary.run_name,
        "status": summary.status,
        "outcome": kind,
        "status_meaning": meaning,
        "steps": [
            {
                "name": s.name or s.task,
                "task": s.task,
                "recorded": s.record is not None,
                "outcome": s.outcome,
                "results": s.results,
            }
            for s in summary.steps
        ],
        "missing": [s.task for s in summary.steps if s.record is None],
        "problems": summary.problems,
        **high,
    }


def run(args: argparse.Namespace) -> None:
    if not args.source.strip() or not Path(args.source).is_dir():
        raise StepError(f"source workspace {args.source!r} is not a folder")
    source = Path(args.source)
    try:
        artifacts = _cli.artifacts_dir(source)
    except OSError as e:
        raise StepError(f"cannot create {source / _cli.ARTIFACTS}: {e.strerror or e}") from None
    try:
        summary = build(source, args.pipeline, args.run_name, args.status)
        high = sections(summary)
        md, data = markdown(summary, high), as_json(summary, high)
    except Exception as e:  # a bug here must not turn a finally task red; say so instead
        title = f"# Run report: {args.pipeline or 'pipeline run'}\n\n"
        md = f"{title}**Status:** {args.status or 'unknown'}\n\nThe summary failed: {e!r}\n"
        data = {"pipeline": args.pipeline, "status": args.status, "problems": [repr(e)]}
    try:
        (artifacts / SUMMARY_MD).write_text(md, encoding="utf-8")
        (artifacts / SUMMARY_JSON).write_text(
            json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
        )
    except OSError as e:
        raise StepError(f"cannot write the summary into {artifacts}: {e.strerror or e}") from None
    print(md, flush=True)
    write_results({"summary": f"{_cli.ARTIFACTS}/{SUMMARY_MD}"})


def build_parser() -> argparse.ArgumentParser:
    p = _cli.parser("report", __doc__.splitlines()[0])
    p.add_argument("--source", required=True)
    p.add_argument("--status", default="")
    p.add_argument("--run-name", default="")
    p.add_argument("--pipeline", default="")
    return p


if __name__ == "__main__":
    _cli.main(run, build_parser())
