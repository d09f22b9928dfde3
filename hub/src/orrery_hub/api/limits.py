"""The request body limit, enforced while the body streams in (ASGI middleware).

A route that reads ``await request.body()`` would buffer a 400 MB upload before any check
could run. This middleware sits in front of every route: a ``Content-Length`` past the
limit is refused with 413 before one byte is read; a body without one (chunked) is counted
as it arrives and refused the moment it passes the limit — the rest is never read.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from orrery.errors import TooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 1024 * 1024


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"request body larger than {limit} bytes (the limit)")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await _refuse(send, _too_large(limit))
                    return
        seen = 0
        started = over = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise _too_large(limit)  # the app's handler answers 413
            return message

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if over:  # close rather than drain the rest of the body to keep alive
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (b"connection", b"close")],
                    }
            await send(message)

        try:
            await self.app(scope, counted, watch)
        except TooLarge as exc:  # raised where no handler saw it (outside a route)
            if started:
                raise
            await _refuse(send, exc)


async def _refuse(send: Send, exc: TooLarge) -> None:
    body = json.dumps({"error": "TooLarge", "detail": exc.message, "retryable": False}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
