"""detect-drift: compare a current batch with the champion's training reference.

The reference is the profile ``train`` logged with the champion's run
(:mod:`taskyard.ml.profile`); the statistic is :func:`taskyard.ml.drift.compare` (KS / chi-square
per feature, corrected for the number of features, and PSI), the same the model server exports.
The current batch is the project's data as it is now (``--current`` empty), a file, or a model
server's window of live inputs (``http(s)://HOST:PORT/monitoring/window``).

No champion yet means nothing to compare with and nothing to protect: ``drifted=true``, so a
drift-retrain pipeline trains the first model. Writes ``artifacts/drift/report.json``
(``--report-dir``) and one PNG per drifted feature (reference vs current) into the workspace,
and logs them to MLflow.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from taskyard import __version__, envs, project
from taskyard.errors import StepError
from taskyard.ml import profile
from taskyard.steps import _cli, _mlflow
from taskyard.steps._results import MAX_RESULT_BYTES, write_results

STEP = "detect-drift"
REPORT_DIR = f"{_cli.ARTIFACTS}/drift"
MAX_WINDOW_BYTES = 64 << 20
FILE_KINDS = (".csv", ".parquet", ".json")


def fetch_window(url: str, timeout: float = 30.0) -> dict[str, list[Any]]:
    """A model server's ``/monitoring/window``: ``{"rows", "columns": {feature: [values]}}``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = resp.read(MAX_WINDOW_BYTES + 1)
    except urllib.error.HTTPError as e:
        raise StepError(f"--current {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise StepError(f"--current {url}: cannot fetch the window ({reason})") from None
    if len(data) > MAX_WINDOW_BYTES:
        raise StepError(f"--current {url}: the window is over {MAX_WINDOW_BYTES >> 20} MiB")
    try:
        body = json.loads(data)
    except ValueError:
        raise StepError(f"--current {url}: the answer is not JSON") from None
    columns = body.get("columns") if isinstance(body, dict) else None
    if not isinstance(columns, dict) or not all(isinstance(v, list) for v in columns.values()):
        raise StepError(f"--current {url}: not a model server window (no columns)")
    return columns


def read_file(path: Path) -> Any:
    import pandas as pd

    if not path.is_file():
        raise StepError(f"--current: {path} not found")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".json":
            return pd.read_json(path)
        return pd.read_csv(path)
    except (ValueError, ImportError, pd.errors.ParserError) as e:
        raise StepError(f"--current: cannot read {path.name}: {_mlflow.one_line(e)}") from None


def current_batch(proj: project.Project, current: str) -> tuple[Any, str]:
    """The batch and a description of where it came from."""
    current = current.strip()
    if not current:
        frame = project.load_frame(proj)
        return frame[
            project.feature_columns(proj, frame)
        ], f"project data {proj.config.data.source}"
    if current.startswith(("http://", "https://")):
        return fetch_window(current), current
    if "://" in current:
        raise StepError(f"--current: {current!r}: only http(s) URLs, files or empty (the data)")
    path = Path(current)
    if not path.is_absolute():
        path = proj.root / path
    if path.suffix not in FILE_KINDS:
        raise StepError(f"--current: {path.name}: use a {', '.join(FILE_KINDS)} file")
    return read_file(path), str(path)


def plot(reference: dict[str, Any], current: Any, name: str, out: Path) -> Path:
    """Reference vs current for one feature: overlaid histograms or grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    col = reference["columns"][name]
    values = current[name] if not hasattr(current, "columns") else current[name].tolist()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if col["kind"] == profile.NUMERIC:
        cur = np.asarray([v for v in values if v is not None], dtype=float)
        cur = cur[~np.isnan(cur)]
        ref = np.asarray(col["sample"], dtype=float)
        bins = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=30)
        ax.hist(ref, bins=bins, density=True, alpha=0.5, label="reference (training)")
        ax.hist(cur, bins=bins, density=True, alpha=0.5, label="current")
    else:
        freq = col["frequencies"]
        seen = [str(v) for v in values if v is not None]
        counts = {k: 0 for k in freq}
        for v in seen:
            key = v if v in counts else profile.OTHER
            counts[key] = counts.get(key, 0) + 1
        keys = list(counts)[:30]
        x = np.arange(len(keys))
        ax.bar(x - 0.2, [freq.get(k, 0.0) for k in keys], 0.4, label="reference (training)")
        ax.bar(x + 0.2, [counts[k] / max(len(seen), 1) for k in keys], 0.4, label="current")
        ax.set_xticks(x, keys, rotation=45, ha="right")
    ax.set_title(f"{name}: reference vs current")
    ax.legend()
    fig.tight_layout()
    path = out / f"{_safe(name)}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100] or "feature"


def fit_result(names: list[str], budget: int = MAX_RESULT_BYTES) -> str:
    """A comma list that fits a result: as many names as fit, then ``,…`` (details: report)."""
    out = ",".join(names)
    while len(out.encode()) > budget:
        names = names[:-1]
        out = ",".join(names) + ",…"
    return out


def run(args: argparse.Namespace) -> None:
    envs.reexec_in_project_env(args.source, args.subdirectory, "detect-drift")
    import mlflow

    from taskyard.ml import drift

    proj = project.load(args.source, args.subdirectory, args.config)
    model_name = args.model_name.strip() or proj.config.project.name
    alias = args.champion_alias.strip() or "champion"
    report_dir = args.report_dir.strip() or REPORT_DIR
    out = args.source / report_dir
    out.mkdir(parents=True, exist_ok=True)
    _mlflow.setup()
    champion = _mlflow.current_alias(mlflow.MlflowClient(), model_name, alias)
    batch, origin = current_batch(proj, args.current)
    report: dict[str, Any] = {"model": model_name, "alias": alias, "current": origin}
    if champion is None:
        reason = f"no {alias} yet ({model_name} has none): the first model must be trained"
        report |= {"drifted": True, "score": 1.0, "reason": reason}
        drifted, score, features, pngs = True, 1.0, [], []
    else:
        reference = profile.for_model(f"models:/{model_name}/{champion}")
        try:
            got = drift.compare(
                reference,
                batch,
                alpha=args.alpha,
                min_psi=args.min_psi,
                max_share=args.max_share,
                correction=args.correction,
            )
        except ValueError as e:
            raise StepError(f"detect-drift: {e}") from None
        drifted, score, features = got.drifted, got.score, got.drifted_features
        report |= {"champion_version": champion, **got.to_dict()}
        pngs = [plot(reference, batch, name, out) for name in features]
        reason = f"{len(features)} of {len(got.features)} features drifted"
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")

    tags = {
        "taskyard.step": STEP,
        "taskyard.version": __version__,
        "taskyard.model_name": model_name,
    }
    with mlflow.start_run(
        experiment_id=_mlflow.experiment(proj.config.experiment), run_name=STEP, tags=tags
    ):
        mlflow.log_params({"current": origin[:500], "champion_version": champion or ""})
        metrics = {
            "drift_score": score,
            "drifted": float(drifted),
            "drifted_features": len(features),
        }
        for name, f in (report.get("features") or {}).items():
            psi = f["psi"]
            if psi is not None and psi == psi and abs(psi) != float("inf"):
                metrics[f"psi.{_safe(name)}"] = psi
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(out / "report.json"), artifact_path="drift")
        for png in pngs:
            mlflow.log_artifact(str(png), artifact_path="drift")

    results = {
        "drifted": "true" if drifted else "false",
        "score": f"{score:.4g}",
        "drifted-features": fit_result(features),
        "report": f"{report_dir}/report.json",
    }
    write_results(results)
    _cli.write_record(args.source, STEP, {"results": results, **report})
    verdict = "drifted" if drifted else "no drift"
    print(f"{verdict} (score {score:.3g}): {reason}; current batch: {origin}")


def build_parser() -> argparse.ArgumentParser:
    p = _cli.parser(STEP, "Compare a current batch with the champion's training reference.")
    p.add_argument("--source", type=Path, default=Path("."), help="the source workspace")
    p.add_argument("--subdirectory", default="", help="project folder inside --source")
    p.add_argument("--config", default="taskyard.toml", help="config file in the project")
    p.add_argument("--model-name", default="", help="registered model (default: project name)")
    p.add_argument("--champion-alias", default="champion")
    p.add_argument(
        "--current",
        default="",
        help="empty: the project's data; a .csv/.parquet/.json file; a server's window URL",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance after correction")
    p.add_argument("--min-psi", type=float, default=0.1, help="minimum PSI of a drifted feature")
    p.add_argument("--max-share", type=float, default=0.0, help="drifted share above which: drift")
    p.add_argument("--correction", choices=("bonferroni", "holm"), default="bonferroni")
    p.add_argument(
        "--report-dir", default=REPORT_DIR, help="report and plots, relative to --source"
    )
    return p


if __name__ == "__main__":
    _cli.main(run, build_parser(), preflight=_mlflow.require_tracking_uri)
