"""``taskyard serve``: the HTTP listener, the cron scheduler and the worker queue together.

HTTP is uvicorn + Starlette (``server.py``, ``web.py``): backlog, connection and thread bounds,
a whole-request deadline and a graceful stop come with it. Endpoints: see ``web.py``.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

from taskyard import home
from taskyard.errors import TaskyardError
from taskyard.serve import config as cfg
from taskyard.serve import logs
from taskyard.serve.alerts import resolve_secrets
from taskyard.serve.cron import Scheduler
from taskyard.serve.dispatch import Dispatcher
from taskyard.serve.events import run_params
from taskyard.serve.handler import Headers, Reply, WebhookHandler
from taskyard.serve.server import HttpServer
from taskyard.serve.store import EventStore
from taskyard.serve.submit import CliSubmitter, NoopSubmitter, Submitter
from taskyard.serve.web import create_app

log = logging.getLogger("taskyard.serve")


class Listener:
    """Everything ``taskyard serve`` runs, startable and stoppable in-process (tests use it)."""

    def __init__(
        self,
        config: cfg.ServeConfig,
        state_dir: Path,
        submitter: Submitter | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        secrets = {(r.provider, r.name): r.secret.resolve() for r in config.repos}
        alert_secrets = resolve_secrets(config.alertmanager) if config.alertmanager else {}
        try:
            self.store = EventStore(state_dir / "events.db")
        except (OSError, sqlite3.Error) as e:
            raise cfg.ServeError(f"cannot open the event store in {state_dir}: {e}") from e
        if submitter is None:
            submitter = (
                NoopSubmitter() if config.submitter == "noop" else CliSubmitter(state_dir / "logs")
            )
        self.dispatcher = Dispatcher(
            self.store,
            submitter,
            config.workers,
            resolve=lambda request: run_params(self.config, request),
        )
        self.scheduler = Scheduler(config.schedules, self.store, self.dispatcher.notify)
        self.webhooks = WebhookHandler(config, secrets, self.store, alert_secrets)
        self.started = time.time()
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self.http: HttpServer | None = None

    @property
    def url(self) -> str:
        assert self.http is not None
        host, port = self.http.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        self.http = HttpServer(create_app(self), self.config.listen)
        self.http.start()  # bind first: a busy port fails before anything else starts
        try:
            settled = self.dispatcher.start()
            self.scheduler.start()
        except BaseException:
            self.http.stop(timeout=5)
            raise
        log.info(
            "listening",
            extra={"fields": {"url": self.url, "pending": self.store.pending, **settled}},
        )

    def stop(self, grace: float = 30.0) -> None:
        """Graceful: stop accepting, let in-flight requests commit, then drain the workers."""
        if self.http is not None:
            self.http.stop()
            deadline = time.monotonic() + 5
            while self._inflight and time.monotonic() < deadline:
                time.sleep(0.01)
        self.scheduler.stop()
        self.dispatcher.stop(grace)
        self.store.close()
        log.info("stopped")

    # -- called by the web app (on its worker threads) -----------------------------------

    def health(self) -> Reply:
        return Reply(
            200,
            {
                "status": "ok",
                "pending": self.store.pending,
                "running": self.dispatcher.running,
                "requests": self.store.counts(),
                "uptime_s": round(time.time() - self.started, 1),
            },
        )

    def webhook(self, provider: str, headers: Headers, body: bytes) -> Reply:
        with self._inflight_lock:
            self._inflight += 1
        try:
            reply = self.webhooks.handle(provider, headers, body)
        finally:
            with self._inflight_lock:
                self._inflight -= 1
        if reply.body.get("status") == "accepted":
            self.dispatcher.notify()
        return reply


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskyard serve",
        description="Listen for GitHub/GitLab push webhooks and cron schedules; run pipelines.",
    )
    p.add_argument("--config", "-c", type=Path, help="YAML or TOML config (default: none)")
    p.add_argument("--host", help="bind address (default: config, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port; 0 picks a free one (default: config, 8080)")
    p.add_argument(
        "--state-dir",
        type=Path,
        help="event store and run logs (default: $TASKYARD_HOME/serve)",
    )
    p.add_argument("--workers", type=int, help="runs at the same time (default: config, 2)")
    p.add_argument(
        "--submitter",
        choices=["cli", "noop"],
        help="cli: `taskyard run` per request (default); noop: store only (benchmarks)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds to let running pipelines finish on shutdown before stopping them",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def serve_main(argv: list[str] | None = None) -> int:
    """Run the listener until SIGTERM/SIGINT. Returns the process exit code."""
    args = parser().parse_args(argv)
    logs.setup(args.log_level)
    try:
        config = cfg.load(args.config) if args.config else cfg.ServeConfig()
        listen = config.listen.model_copy(
            update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        )
        update: dict[str, object] = {"listen": listen}
        if args.workers:
            update["workers"] = args.workers
        if args.submitter:
            update["submitter"] = args.submitter
        config = config.model_copy(update=update)
        listener = Listener(config, args.state_dir or home.home() / "serve")
        listener.start()
    except TaskyardError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, always
        return 1
    print(f"taskyard serve: listening on {listener.url}", flush=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: dump stacks
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # A timed wait: the kernel may deliver SIGTERM to any thread, and an untimed lock wait in
    # the main thread would then never return to run the Python-level handler.
    while not stop.wait(timeout=0.25):
        pass
    listener.stop(args.grace)
    return 0
