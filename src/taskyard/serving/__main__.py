"""``python -m taskyard.serving``: load a pyfunc model, then serve it with uvicorn."""

from __future__ import annotations

import argparse
import os
import sys

from taskyard.serving.limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_JSON_DEPTH, InputLimits


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m taskyard.serving", description="Serve an MLflow pyfunc model."
    )
    p.add_argument("--model-uri", required=True, help="models:/NAME/VERSION, runs:/…, a path")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--max-json-depth", type=int, default=DEFAULT_MAX_JSON_DEPTH)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    import uvicorn
    from mlflow.pyfunc import scoring_server

    try:
        model = mlflow.pyfunc.load_model(args.model_uri)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"error: cannot load {args.model_uri}: {first}", file=sys.stderr)
        return 1
    app = InputLimits(scoring_server.init(model), args.max_body_bytes, args.max_json_depth)
    print(f"serving {args.model_uri} on {args.host}:{args.port}", flush=True)
    uvicorn.run(
        app, host=args.host, port=args.port, workers=1, timeout_graceful_shutdown=5,
        log_level="info",
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
