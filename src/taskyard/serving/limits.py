"""Input limits in front of the scoring app: a body-size cap and a JSON nesting-depth cap.

A plain ASGI middleware (no framework needed): it reads the body once, refuses what is too big
or too deep with MLflow's error shape, and replays the body to the app. The depth check is a
scan, not a parse: Python's json parser is recursive, and a 50k-deep array is exactly what
makes it fail; the scan costs a few regex passes over the bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

DEFAULT_MAX_BODY_BYTES = 10 << 20
DEFAULT_MAX_JSON_DEPTH = 64
# An over-cap body is still read (and dropped) up to this much before the 413 goes out, so the
# client sees the 413 instead of a connection reset (once a reply is sent, uvicorn delivers no
# more of the body); a bigger one is cut off.
DRAIN_LIMIT = 64 << 20

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ESCAPE = re.compile(rb"\\.", re.S)  # an escape pair: never a structural character
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_PAIR = re.compile(rb"\[\]|\{\}")  # innermost pairs, once only brackets are left


def json_depth(data: bytes, cap: int = 1 << 20) -> int:
    """How deeply ``data``'s arrays and objects nest (0 for a scalar), counted up to ``cap``.

    Each pass drops one level of innermost pairs (C-speed regex, no Python loop per byte).
    Openers left unmatched (malformed input) count as depth too: they recurse the parser the
    same way.
    """
    outside_strings = b"".join(_ESCAPE.sub(b"", data).split(b'"')[::2])
    bare = outside_strings.translate(None, delete=_NOT_BRACKETS)
    depth = 0
    while bare and depth <= cap:
        shorter = _PAIR.sub(b"", bare)
        if len(shorter) == len(bare):
            break
        bare, depth = shorter, depth + 1
    return depth + bare.count(b"[") + bare.count(b"{")


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()
) -> None:
    """A complete JSON response (the one way this package answers by itself)."""
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _reply(send: Send, status: int, message: str) -> None:
    body = {"error_code": "BAD_REQUEST", "message": message}
    await send_json(send, status, body, [(b"connection", b"close")])


async def _drain(receive: Receive, seen: int) -> None:
    while seen <= DRAIN_LIMIT:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return
        seen += len(message.get("body", b""))


class InputLimits:
    """Wraps an ASGI app; POST bodies over ``max_body_bytes`` or nested deeper than
    ``max_json_depth`` are answered here and never reach the app."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_json_depth: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = f"request body over {self.max_body_bytes} bytes"
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _drain(receive, 0)
            await _reply(send, 413, too_big)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                if message.get("more_body", False):
                    await _drain(receive, len(body))
                await _reply(send, 413, too_big)
                return
            if not message.get("more_body", False):
                break
        kind = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        limit = self.max_json_depth
        if kind.endswith(b"json") and json_depth(bytes(body), limit) > limit:
            await _reply(send, 400, f"JSON nested deeper than {limit} levels")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)
