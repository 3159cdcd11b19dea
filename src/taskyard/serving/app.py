"""The server's ASGI app: health and metrics routes in front of MLflow's scoring app.

It answers from the first moment the socket listens; the model loads in a background thread
(:meth:`ServingApp.load`). Routes:

- ``/health`` (readiness): ``503 {"status": "loading"}``, then ``200 {"status": "ready",
  "model_uri": …}`` once the model is loaded;
- ``/live`` (liveness): ``200 {"status": "alive"}`` while the process serves;
- ``/metrics``: prometheus_client's ASGI app over the server's own registry;
- ``/monitoring/window``: the drift window's input rows as JSON (``detect-drift --current``);
  404 while drift monitoring is off (no reference profile);
- everything else (``/invocations``, ``/ping``, ``/version``, …): MLflow's scoring app behind
  the input limits, ``503`` while the model is loading; counted and timed per path and status.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

from prometheus_client import make_asgi_app

from taskyard.serving.limits import (
    ASGIApp,
    InputLimits,
    Message,
    Receive,
    Scope,
    Send,
    send_json,
)
from taskyard.serving.metrics import ObservedModel, ServerMetrics

LOADING, READY = "loading", "ready"
WINDOW_PATH = "/monitoring/window"
UNCOUNTED = frozenset({"/metrics", "/health", "/live", WINDOW_PATH})


def load_error(model_uri: str, e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"error: cannot load {model_uri}: {first}"


class ServingApp:
    """Routes /health, /live and /metrics itself; the scoring app once the model is loaded."""

    def __init__(
        self,
        model_uri: str,
        metrics: ServerMetrics,
        *,
        max_body_bytes: int,
        max_json_depth: int,
        reference: str = "",
    ) -> None:
        self.model_uri = model_uri
        self.reference = reference
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.state = LOADING
        self.scoring: ASGIApp | None = None
        self.metrics_app = make_asgi_app(registry=metrics.registry)

    # -- loading (a background thread) ---------------------------------------------------------
    def load(self) -> None:
        """Load the model and build the scoring app; raises what the loading raised."""
        import mlflow
        from mlflow.pyfunc import scoring_server

        started = time.monotonic()
        model = mlflow.pyfunc.load_model(self.model_uri)
        scoring = scoring_server.init(ObservedModel(model, self.metrics))
        self.scoring = InputLimits(scoring, self.max_body_bytes, self.max_json_depth)
        self.load_reference(model)
        self.state = READY
        self.metrics.ready.labels(*self.metrics.labels).set(1)
        print(f"loaded {self.model_uri} in {time.monotonic() - started:.1f}s", flush=True)

    def load_reference(self, model: object) -> None:
        """The training reference for the drift gauges: ``--reference FILE``, else the profile
        logged with the model's run. Without one the server serves, with drift gauges off."""
        if self.reference == "none":
            return
        from pathlib import Path

        from taskyard.ml import profile

        try:
            if self.reference:
                reference = profile.load(Path(self.reference))
            else:
                run_id = getattr(getattr(model, "metadata", None), "run_id", None)
                if not run_id:
                    raise ValueError("the model names no training run")
                reference = profile.for_model(run_id)
        except Exception as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            print(f"drift monitoring off: no reference profile ({why})", file=sys.stderr)
            return
        self.metrics.drift.set_reference(reference)
        count = len(self.metrics.drift.features)
        print(f"drift monitoring on: {count} features against the training reference", flush=True)

    def load_in_background(self, on_failure: Callable[[str], None]) -> threading.Thread:
        def run() -> None:
            try:
                self.load()
            except BaseException as e:
                on_failure(load_error(self.model_uri, e))

        thread = threading.Thread(target=run, name="load-model", daemon=True)
        thread.start()
        return thread

    # -- ASGI -------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        path = scope.get("path", "")
        if path == "/live":
            await send_json(send, 200, {"status": "alive"})
        elif path == "/health":
            if self.state == READY:
                await send_json(send, 200, {"status": READY, "model_uri": self.model_uri})
            else:
                await send_json(send, 503, {"status": LOADING}, [(b"retry-after", b"1")])
        elif path == "/metrics":
            await self.metrics_app(scope, receive, send)
        elif path == WINDOW_PATH:
            if self.metrics.drift.enabled:
                await send_json(send, 200, self.metrics.drift.snapshot())
            else:
                await send_json(send, 404, {"error": "drift monitoring is off (no reference)"})
        else:
            await self._scoring(scope, receive, send, path)

    async def _scoring(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        started = time.perf_counter()
        status: list[int] = []

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            if self.scoring is None:
                await send_json(
                    counted,
                    503,
                    {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "the model is loading"},
                    [(b"retry-after", b"1")],
                )
            else:
                await self.scoring(scope, receive, counted)
        finally:
            if status:  # no status: the client went away before an answer
                self.metrics.request(path, status[0], time.perf_counter() - started)


def fail_fast(message: str) -> None:
    """The model cannot load: one line on stderr, exit 1, nothing logged after it (the last
    log line is what ``kubectl logs`` and the local deploy step show)."""
    try:
        sys.stdout.flush()
        print(message, file=sys.stderr, flush=True)
    finally:
        os._exit(1)
