"""``python -m taskyard.serving``: listen at once, load the pyfunc model in the background."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from taskyard.serving.drift import DEFAULT_MIN_ROWS, DEFAULT_WINDOW
from taskyard.serving.limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_JSON_DEPTH
from taskyard.serving.metrics import (
    DEFAULT_MAX_CLASSES,
    DEFAULT_MAX_FEATURES,
    DEFAULT_PREDICTION_BUCKETS,
)


def _buckets(text: str) -> tuple[float, ...]:
    try:
        values = tuple(sorted({float(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        msg = f"not a comma-separated list of numbers: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one bucket bound")
    return values


def _path(record: logging.LogRecord) -> str:
    """The request path of a uvicorn access-log record (args: client, method, path, …)."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3:
        return str(args[2]).split("?", 1)[0]
    return ""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m taskyard.serving",
        description="Serve an MLflow pyfunc model: MLflow's scoring app, /health, /live, "
        "/metrics. Listens at once; /health answers 200 once the model is loaded.",
    )
    p.add_argument("--model-uri", required=True, help="models:/NAME/VERSION, runs:/…, a path")
    p.add_argument("--host", default="127.0.0.1", help="bind address (in a container: 0.0.0.0)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--max-json-depth", type=int, default=DEFAULT_MAX_JSON_DEPTH)
    p.add_argument(
        "--prediction-buckets",
        type=_buckets,
        default=DEFAULT_PREDICTION_BUCKETS,
        metavar="B1,B2,…",
        help="upper bounds of the float-prediction histogram",
    )
    p.add_argument(
        "--max-classes",
        type=int,
        default=DEFAULT_MAX_CLASSES,
        help="distinct predicted classes counted by name; the rest count as class=other",
    )
    p.add_argument(
        "--max-features",
        type=int,
        default=DEFAULT_MAX_FEATURES,
        help="input columns summarized (the first ones seen)",
    )
    drift = p.add_argument_group("drift", "the rolling window of inputs vs the training data")
    drift.add_argument(
        "--reference",
        default="",
        metavar="FILE",
        help="reference profile JSON; default: the one logged with the model's run; "
        "`none`: drift gauges off",
    )
    drift.add_argument("--drift-window", type=int, default=DEFAULT_WINDOW, metavar="ROWS")
    drift.add_argument(
        "--drift-min-rows",
        type=int,
        default=DEFAULT_MIN_ROWS,
        metavar="ROWS",
        help="rows before a drift score is exported",
    )
    drift.add_argument("--drift-alpha", type=float, default=0.05, help="test significance")
    drift.add_argument("--drift-min-psi", type=float, default=0.1, help="minimum PSI effect")
    drift.add_argument(
        "--drift-max-share",
        type=float,
        default=0.0,
        help="share of drifted features above which the input counts as drifted",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import prometheus_client
    import uvicorn

    from taskyard.serving.app import UNCOUNTED, ServingApp, fail_fast
    from taskyard.serving.metrics import ServerMetrics

    prometheus_client.disable_created_metrics()  # no *_created series: this process only
    metrics = ServerMetrics(
        args.model_uri,
        prediction_buckets=args.prediction_buckets,
        max_classes=args.max_classes,
        max_features=args.max_features,
        drift={
            "window": args.drift_window,
            "min_rows": args.drift_min_rows,
            "alpha": args.drift_alpha,
            "min_psi": args.drift_min_psi,
            "max_share": args.drift_max_share,
        },
    )
    app = ServingApp(
        args.model_uri,
        metrics,
        max_body_bytes=args.max_body_bytes,
        max_json_depth=args.max_json_depth,
        reference=args.reference,
    )
    print(f"serving {args.model_uri} on {args.host}:{args.port} (loading)", flush=True)
    app.load_in_background(fail_fast)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, workers=1, timeout_graceful_shutdown=5,
        log_level="info", lifespan="off",
    )  # fmt: skip
    # Probes and scrapes every few seconds would drown the log: only scoring requests are logged.
    logging.getLogger("uvicorn.access").addFilter(lambda r: _path(r) not in UNCOUNTED)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
