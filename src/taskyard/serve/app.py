"""``taskyard serve``: the HTTP listener, the cron scheduler and the worker queue together.

Endpoints (stdlib ``ThreadingHTTPServer``, HTTP/1.1 keep-alive):
  POST /hooks/github   GitHub webhooks (``X-Hub-Signature-256``)
  POST /hooks/gitlab   GitLab webhooks (``X-Gitlab-Token``)
  POST /webhook        either, told apart by ``X-GitHub-Event`` / ``X-Gitlab-Event``
  GET  /healthz        ``{"status": "ok", "pending": n, "running": n, "requests": {state: n}}``
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from taskyard import home
from taskyard.errors import TaskyardError
from taskyard.serve import config as cfg
from taskyard.serve import logs
from taskyard.serve.cron import Scheduler
from taskyard.serve.dispatch import Dispatcher
from taskyard.serve.handler import Headers, Reply, WebhookHandler
from taskyard.serve.store import EventStore
from taskyard.serve.submit import CliSubmitter, NoopSubmitter, Submitter

log = logging.getLogger("taskyard.serve")

# GitHub caps webhook payloads at 25 MB; larger bodies are not even read.
DRAIN_LIMIT = 32 << 20
ROUTES = {"/hooks/github": "github", "/hooks/gitlab": "gitlab", "/webhook": None}


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
        self.store = EventStore(state_dir / "events.db")
        if submitter is None:
            submitter = (
                NoopSubmitter() if config.submitter == "noop" else CliSubmitter(state_dir / "logs")
            )
        self.dispatcher = Dispatcher(self.store, submitter, config.workers)
        self.scheduler = Scheduler(config.schedules, self.store, self.dispatcher.notify)
        self.webhooks = WebhookHandler(config, secrets, self.store)
        self.started = time.time()
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        resumed = self.store.recover()
        pending = self.store.pending
        try:
            self.server = _Server((self.config.listen.host, self.config.listen.port), self)
        except OSError as e:
            raise cfg.ServeError(
                f"cannot listen on {self.config.listen.host}:{self.config.listen.port}: "
                f"{e.strerror}"
            ) from e
        self.dispatcher.start()
        self.scheduler.start()
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        log.info(
            "listening",
            extra={"fields": {"url": self.url, "pending": pending, "resumed_running": resumed}},
        )

    def stop(self, grace: float = 30.0) -> None:
        """Graceful: stop accepting, let in-flight requests commit, then drain the workers."""
        if self.server is not None:
            self.server.shutdown()
            deadline = time.monotonic() + 5
            while self._inflight and time.monotonic() < deadline:
                time.sleep(0.01)
            self.server.server_close()
        self.scheduler.stop()
        self.dispatcher.stop(grace)
        self.store.close()
        log.info("stopped")

    # -- called by the request handler --------------------------------------------------

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], listener: Listener) -> None:
        self.listener = listener
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # an idle keep-alive connection does not hold a thread forever
    # Headers and body are two writes: without TCP_NODELAY, Nagle + the client's delayed ACK
    # add ~40 ms to every reply.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass  # our own structured log line per request instead

    def _send(self, reply: Reply) -> None:
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _discard(self, length: int) -> None:
        """Read and drop an over-limit body (up to DRAIN_LIMIT) so the sender sees the 413
        instead of a reset; a bigger one is left unread and the connection closed."""
        if length > DRAIN_LIMIT:
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                return
            length -= len(chunk)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/healthz":
            self._send(self.server.listener.health())
        else:
            self._send(Reply(404, {"error": "not found"}))

    def do_POST(self) -> None:
        start = time.perf_counter()
        path = urlsplit(self.path).path
        listener = self.server.listener
        if path not in ROUTES:
            self.close_connection = True
            return self._send(Reply(404, {"error": "not found"}))
        provider = ROUTES[path]
        if provider is None:
            if self.headers.get("X-GitHub-Event"):
                provider = "github"
            elif self.headers.get("X-Gitlab-Event"):
                provider = "gitlab"
        length_text = self.headers.get("Content-Length")
        if provider is None:
            reply = Reply(400, {"error": "neither X-GitHub-Event nor X-Gitlab-Event is set"})
        elif length_text is None or not length_text.isdigit():
            reply = Reply(411, {"error": "Content-Length required"})
        elif int(length_text) > listener.config.listen.max_body_bytes:
            reply = Reply(413, {"error": "payload too large"})
            self._discard(int(length_text))
        else:
            body = self.rfile.read(int(length_text))
            reply = listener.webhook(provider, Headers(self.headers.items()), body)
        if reply.status in (411, 413, 404) or (reply.status == 400 and provider is None):
            self.close_connection = True  # the unread body must not be parsed as a request
        self._send(reply)
        log.info(
            "webhook",
            extra={
                "fields": {
                    "provider": provider,
                    "status": reply.status,
                    "outcome": reply.body.get("status") or reply.body.get("error"),
                    "reason": reply.body.get("reason"),
                    "delivery": reply.body.get("delivery"),
                    "ms": round((time.perf_counter() - start) * 1000, 2),
                }
            },
        )


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
        print(f"error: {e}", file=sys.stderr)
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
