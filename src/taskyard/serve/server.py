"""uvicorn in a thread: startable and stoppable in-process, with a whole-request deadline.

What bounds what:

* ``backlog`` (default 2048): the kernel's queue of connections not yet accepted. The stdlib
  server's 5 reset bursts of 50; the event loop accepts as fast as connections come.
* ``max-connections`` -> uvicorn ``limit_concurrency``: open connections and requests in
  flight; a request beyond it gets 503 (a safety valve for memory and file descriptors, set
  well above any burst we expect to answer with 202).
* ``threads`` -> the anyio ``CapacityLimiter`` in ``web.py``: the blocking work at once.
* ``request-timeout``: one deadline per request, from its first byte (or the connection's
  start) until its body is complete. uvicorn has none for reading a request (its keep-alive
  timeout covers only the idle gap between requests), so :class:`DeadlineProtocol` adds it: a
  client trickling a byte a second gets a 408 and a closed connection when the deadline
  passes, however steadily it sends. A slow client costs a socket, never a thread.
* graceful stop: stop accepting, close idle keep-alive connections, let requests in flight
  finish (up to ``request-timeout`` + 5 s), then return.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from taskyard.serve.config import Listen, ServeError
from taskyard.serve.handler import Reply
from taskyard.serve.web import ROUTES, log_webhook

TIMEOUT_BODY = json.dumps({"error": "request not received within the deadline"}).encode()
TIMEOUT_REPLY = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(TIMEOUT_BODY), TIMEOUT_BODY)
)


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for receiving each whole request."""

    request_timeout: float = 10.0  # set per server by :func:`protocol_class`

    _timer: asyncio.TimerHandle | None = None
    _began: float = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.more_body:
            self._disarm()  # the whole request is in; the app's time is not the client's

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._began = time.perf_counter()
        self._timer = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self.transport.close()  # answered already; it is still sending what we won't read
            return
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's pending read ends; its reply is dropped
            cycle.message_event.set()
        path = cycle.scope["path"] if cycle is not None and not cycle.response_complete else None
        self.transport.write(TIMEOUT_REPLY)
        self.transport.close()
        reply = Reply(408, {"error": "request timeout"})
        log_webhook(ROUTES.get(path) if path else None, reply, self._began)


def protocol_class(request_timeout: float) -> type[DeadlineProtocol]:
    return type("DeadlineProtocol", (DeadlineProtocol,), {"request_timeout": request_timeout})


def bind(listen: Listen) -> socket.socket:
    """Bind before starting uvicorn: a busy port is a one-line ServeError, port 0 works, and
    the bound address is known at once."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it Nagle + the client's delayed ACK add ~40 ms to each multi-write reply.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(listen.backlog)
        return sock
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {listen.host}:{listen.port}: {e.strerror or e}") from e


class HttpServer:
    """One uvicorn server on its own event loop thread (no signal handlers: not the main
    thread, so ``taskyard serve`` and tests stop it the same way)."""

    def __init__(self, app: Any, listen: Listen) -> None:
        self.listen = listen
        self.config = uvicorn.Config(
            app,
            http=protocol_class(listen.request_timeout),
            lifespan="off",
            log_config=None,  # our JSON lines; logs.setup routes uvicorn's warnings there
            access_log=False,  # one line per webhook is written by the app itself
            proxy_headers=False,
            server_header=False,
            backlog=listen.backlog,
            limit_concurrency=listen.max_connections,
            timeout_keep_alive=listen.keep_alive_timeout,  # type: ignore[arg-type]
            timeout_graceful_shutdown=int(listen.request_timeout) + 5,
        )
        self.server = uvicorn.Server(self.config)
        self.sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.sock is not None
        host, port = self.sock.getsockname()[:2]
        return host, port

    def start(self, timeout: float = 15.0) -> None:
        self.sock = bind(self.listen)
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.sock.close()
                raise ServeError(f"the HTTP server did not start: {self._error or 'timeout'}")
            time.sleep(0.01)
        self._warm_up()

    def _warm_up(self) -> None:
        """One GET /healthz through the real socket: the first request otherwise pays for
        anyio's lazy backend import and the first pool thread (~15-25 ms, seen as p99)."""
        host, port = self.address
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        conn = http.client.HTTPConnection(host, port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            pass  # a warm-up, not a check
        finally:
            conn.close()

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock] if self.sock else None)
        except BaseException as e:  # SystemExit from uvicorn's startup included
            self._error = e

    def stop(self, timeout: float | None = None) -> None:
        """Graceful: stop accepting, let requests in flight finish, then return."""
        if self._thread is None:
            return
        self.server.should_exit = True
        wait = timeout if timeout is not None else self.listen.request_timeout + 10
        self._thread.join(wait)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(5)
        if self.sock is not None:
            self.sock.close()
