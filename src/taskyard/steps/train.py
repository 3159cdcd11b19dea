"""train: fit the project's model on the training split and log it to MLflow.

The holdout metric is computed on the model as LOGGED (reloaded through ``mlflow.pyfunc``),
with the same function ``evaluate`` uses: a model that cannot be loaded back fails here, and
the number in this run is the number evaluate will see.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from taskyard import __version__, envs, ml, project
from taskyard.errors import StepError
from taskyard.ml import custom, metrics, profile
from taskyard.steps import _cache, _cli, _mlflow
from taskyard.steps._results import write_results

STEP = "train"


def _typed(value: str) -> Any:
    """``3`` -> int, ``0.1`` -> float, ``true`` -> bool, ``none`` -> None, else the string."""
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_overrides(text: str) -> dict[str, Any]:
    """``"n_estimators=50,max_depth=4"`` -> ``{"n_estimators": 50, "max_depth": 4}``."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise StepError(f"--overrides: {item!r} is not key=value")
        out[key.strip()] = _typed(value.strip())
    return out


def _run_params(cfg: project.ProjectConfig, hyper: dict[str, Any], rows: int) -> dict[str, Any]:
    meta = {
        "model.framework": cfg.model.framework,
        "model.task": cfg.model.task,
        "model.estimator": cfg.model.estimator or "",
        "model.factory": cfg.model.factory or "",
        "train.entrypoint": cfg.train.entrypoint or "",
        "data.source": cfg.data.source,
        "data.target": cfg.data.target,
        "data.test_size": cfg.data.test_size,
        "data.seed": cfg.data.seed,
        "data.rows": rows,
    }
    return {**meta, **{k: "None" if v is None else str(v)[:500] for k, v in hyper.items()}}


def source_of(cfg: project.ProjectConfig) -> str:
    """Where the model comes from: taskyard's trainers, the project's factory or entrypoint."""
    if cfg.train.entrypoint:
        return "entrypoint"
    return "factory" if cfg.model.factory else "built-in"


def fit(proj: project.Project, spec: ml.FitSpec, split: project.Holdout, active: Any) -> ml.Fitted:
    """Train the model the config asks for (inside the active MLflow run)."""
    cfg = proj.config
    if cfg.train.entrypoint:
        ctx = custom.TrainContext(
            x_train=split.x_train,
            y_train=split.y_train,
            x_holdout=split.x_test,
            y_holdout=split.y_test,
            params=dict(spec.params),
            task=spec.task,
            device=custom.device_for(spec.device),
            seed=spec.seed,
            run=active,
            project_root=proj.root,
        )
        return custom.run_entrypoint(proj.root, cfg.train.entrypoint, ctx)
    if cfg.model.factory:
        return custom.fit_factory(proj.root, cfg.model.factory, spec, split.x_train, split.y_train)
    return ml.trainer(cfg.model.framework).fit(spec, split.x_train, split.y_train)


def run(args: argparse.Namespace) -> None:
    envs.reexec_in_project_env(args.source, args.subdirectory, "train")
    proj = project.load(args.source, args.subdirectory, args.config)
    cfg = proj.config
    frame = project.load_frame(proj)
    digest = project.data_hash(frame)
    model_name = args.model_name.strip() or cfg.project.name
    overrides = parse_overrides(args.overrides)

    # The cache first, before mlflow and the model's libraries are imported: a hit needs none.
    reader = _cache.store_reader(_mlflow.configure())
    inputs = {"project": _cache.project_state(proj.root), "data": digest}
    cached = _cache.open_cache(
        STEP, args, args.source, inputs, reader=reader,
        # A cached training counts while its MLflow run (and so its model) is not deleted.
        valid=lambda results: reader.run_active(results.get("run-id", "")),
    )  # fmt: skip
    if cached.replay():
        return
    import mlflow

    _mlflow.setup()
    split = project.holdout(proj, frame)
    spec = ml.FitSpec(
        task=cfg.model.task,
        params={**cfg.model.params, **overrides},
        seed=cfg.data.seed,
        device=args.device,
        estimator=cfg.model.estimator,
    )
    origin = source_of(cfg)
    experiment_id = _mlflow.experiment(cfg.experiment)
    commit = args.commit.strip()
    tags = {
        "taskyard.step": STEP,
        "taskyard.version": __version__,
        "taskyard.framework": cfg.model.framework,
        "taskyard.model_source": origin,
        "taskyard.data_hash": digest,
        "taskyard.model_name": model_name,
    }
    if commit:  # ours, with promote's lineage tags; MLflow's, for its UI's source column
        tags |= {"taskyard.commit": commit, "mlflow.source.git.commit": commit}
    run_name = f"train-{commit[:8]}" if commit else "train"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as active:
        run_id = active.info.run_id
        started = time.perf_counter()
        fitted = fit(proj, spec, split, active)
        training_time = time.perf_counter() - started
        mlflow.set_tag("taskyard.device", fitted.device)
        mlflow.log_params(_run_params(cfg, fitted.params, len(frame)))
        info = fitted.log_model("model", split.x_train.head(5))
        # What drift is measured against (the model server, detect-drift): the features the
        # model was fitted on, as it saw them.
        profile.log(profile.build(split.x_train, seed=cfg.data.seed))
        try:
            reloaded = mlflow.pyfunc.load_model(info.model_uri)
        except Exception as e:
            raise StepError(f"the logged model does not load back: {e}") from None
        names = [*metrics.label_metrics(cfg.model.task)]
        if cfg.metric_name not in names:
            names.append(cfg.metric_name)
        try:
            scores = {n: metrics.evaluate(reloaded, n, split.x_test, split.y_test) for n in names}
        except ValueError as e:
            raise StepError(f"cannot score the holdout: {e}") from None
        mlflow.log_metrics({**scores, "training_time_s": training_time}, model_id=info.model_id)

    results = {
        "run-id": run_id,
        "model-uri": f"runs:/{run_id}/model",
        "model-name": model_name,
        "metric-name": cfg.metric_name,
        "metric-value": f"{scores[cfg.metric_name]:.6g}",
        "data-hash": digest,
    }
    write_results(results)
    record_data = {
        "results": results,
        "framework": cfg.model.framework,
        "model_source": origin,
        "device": fitted.device,
        "params": fitted.params,
        "metrics": scores,
        "training_time_s": round(training_time, 3),
        "reference_profile": profile.ARTIFACT,
        "train_rows": len(split.x_train),
        "holdout_rows": len(split.x_test),
        "commit": commit,
    }
    record = _cli.write_record(args.source, STEP, record_data)
    # The bytes written, not the file: a sweep's trials share it (steps/_cache.py store).
    cached.store(results, [(record, _cli.record_bytes(record_data))], origin=run_id)
    what = cfg.model.framework if origin == "built-in" else f"the project's model ({origin})"
    print(
        f"trained {what} on {fitted.device} in {training_time:.1f}s: "
        f"{cfg.metric_name}={scores[cfg.metric_name]:.4f} on {len(split.x_test)} holdout rows; "
        f"run {run_id}"
    )


def build_parser() -> argparse.ArgumentParser:
    p = _cli.parser(STEP, "Train the project's model and log it to MLflow.")
    p.add_argument("--source", type=Path, default=Path("."), help="the source workspace")
    p.add_argument("--subdirectory", default="", help="project folder inside --source")
    p.add_argument("--config", default="taskyard.toml", help="config file in the project")
    p.add_argument("--overrides", default="", help="hyperparameters: k=v,k2=v2")
    p.add_argument("--commit", default="", help="git commit to tag the run with")
    p.add_argument("--model-name", default="", help="registered model name (default: project)")
    p.add_argument("--device", default="auto", choices=ml.DEVICES)
    _cache.add_flags(p)
    return p


if __name__ == "__main__":
    _cli.main(run, build_parser(), preflight=_mlflow.require_tracking_uri)
