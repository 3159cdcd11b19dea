"""The listener's HTTP face: a Starlette app over the HTTP-free :class:`WebhookHandler`.

Endpoints:
  POST /hooks/github   GitHub webhooks (``X-Hub-Signature-256``)
  POST /hooks/gitlab   GitLab webhooks (``X-Gitlab-Token``)
  POST /webhook        either, told apart by ``X-GitHub-Event`` / ``X-Gitlab-Event``
  POST /alerts/alertmanager   Alertmanager's webhook receiver (bearer token or basic auth)
  GET  /healthz        ``{"status": "ok", "pending": n, "running": n, "requests": {state: n}}``

The event loop only moves bytes. The blocking part of a webhook (HMAC, JSON, the durable
commit, which waits for an fsync) runs on a bounded pool: an anyio ``CapacityLimiter`` of
``listen.threads`` tokens, so a burst queues cheaply on the loop instead of growing threads.
Every reply is JSON with ``error`` on failures, and every webhook gets one JSON log line, a
500 (an unexpected exception) included; nothing escapes to uvicorn as a traceback.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from taskyard.redact import redact
from taskyard.serve.handler import Headers, Reply

if TYPE_CHECKING:
    from taskyard.serve.app import Listener

log = logging.getLogger("taskyard.serve")

# GitHub caps webhook payloads at 25 MB; an over-limit body up to this size is read and dropped
# so the sender sees the 413 instead of a reset; a bigger one is left unread.
DRAIN_LIMIT = 32 << 20
ROUTES: dict[str, str | None] = {
    "/hooks/github": "github",
    "/hooks/gitlab": "gitlab",
    "/webhook": None,
    "/alerts/alertmanager": "alertmanager",
}


def log_webhook(
    provider: str | None, reply: Reply, start: float, exc: BaseException | None = None
) -> None:
    """The one JSON line per webhook request (also written for 408s by the server)."""
    fields: dict[str, Any] = {
        "provider": provider,
        "status": reply.status,
        "outcome": reply.body.get("status") or reply.body.get("error"),
        "reason": reply.body.get("reason"),
        "delivery": reply.body.get("delivery"),
        "ms": round((time.perf_counter() - start) * 1000, 2),
    }
    if exc is not None:  # what went wrong, on the same line: no traceback spread over many
        fields["exception"] = redact(" ".join(f"{type(exc).__name__}: {exc}".split()))[:500]
    log.log(
        logging.ERROR if reply.status >= 500 else logging.INFO, "webhook", extra={"fields": fields}
    )


def _json(reply: Reply, close: bool = False) -> JSONResponse:
    # `Connection: close` makes h11 close after the reply: an unread body must not be parsed
    # as the next request.
    return JSONResponse(
        reply.body, reply.status, headers={"Connection": "close"} if close else None
    )


class WebApp:
    """Holds the limiter (made on the event loop, where anyio wants it) and the endpoints."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.listener.config.listen.threads)
        return self._limiter

    def starlette(self) -> Starlette:
        routes = [Route(path, self.webhook, methods=["POST"]) for path in ROUTES]
        routes.append(Route("/healthz", self.healthz, methods=["GET"]))
        app = Starlette(routes=routes, exception_handlers={HTTPException: self.http_error})
        app.router.redirect_slashes = False  # a webhook sender does not follow a 307: 404
        return app

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """404 / 405 from the router, as JSON like every other reply."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        error = {404: "not found", 405: "method not allowed"}.get(status, "bad request")
        reply = Reply(status, {"error": error})
        if request.method == "POST":
            log_webhook(None, reply, time.perf_counter())
        return _json(reply, close=request.method not in ("GET", "HEAD"))

    async def healthz(self, request: Request) -> Response:
        try:
            reply = await anyio.to_thread.run_sync(self.listener.health, limiter=self.limiter)
        except Exception as e:
            reply = Reply(500, {"error": "internal error"})
            log.error("healthz failed", extra={"fields": {"exception": f"{type(e).__name__}: {e}"}})
        return _json(reply)

    async def webhook(self, request: Request) -> Response:
        start = time.perf_counter()
        provider = ROUTES[request.url.path]
        headers = request.headers
        if provider is None:
            if headers.get("x-github-event"):
                provider = "github"
            elif headers.get("x-gitlab-event"):
                provider = "gitlab"
        length_text = headers.get("content-length")
        limit = self.listener.config.listen.max_body_bytes
        close = True  # unless the body was read in full
        error: Exception | None = None
        try:
            if provider is None:
                reply = Reply(400, {"error": "neither X-GitHub-Event nor X-Gitlab-Event is set"})
            elif length_text is None or not length_text.isdigit():
                reply = Reply(411, {"error": "Content-Length required"})
            elif int(length_text) > limit:
                if int(length_text) <= DRAIN_LIMIT:
                    await _drain(request)
                reply = Reply(413, {"error": "payload too large"})
            else:
                body = await request.body()
                close = False
                reply = await anyio.to_thread.run_sync(
                    self.listener.webhook,
                    provider,
                    Headers(headers.items()),
                    body,
                    limiter=self.limiter,
                )
        except ClientDisconnect:
            # The client went away, or the server cut it off at the request deadline (that
            # one already answered 408 and logged it).
            return Response(status_code=400)
        except Exception as e:  # a bug must cost one 500 and one line, not the connection
            error, reply = e, Reply(500, {"error": "internal error"})
        log_webhook(provider, reply, start, error)
        return _json(reply, close=close or reply.status >= 500)


async def _drain(request: Request) -> None:
    async for _chunk in request.stream():
        pass


def create_app(listener: Listener) -> Any:
    """The ASGI app for ``listener``."""
    return WebApp(listener).starlette()
