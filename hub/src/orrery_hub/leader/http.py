"""The API's side of hub standby: a standby refuses writes before doing any work, with a
503 that names the leader (``X-Orrery-Leader``), so the CLI sends the request there. Reads
are served by every hub, from the shared database.

Who calls it: ``api.app.create_app`` adds ``StandbyGuard`` when the hub runs with a leader
lease, and answers ``NotLeader`` (from the guard, or from the store's fence when a hub is
deposed in the middle of a request) with ``standby_headers``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from orrery.errors import NotLeader

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

READS = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(Protocol):
    @property
    def leading(self) -> bool: ...

    def not_leader(self) -> NotLeader: ...


def standby_headers(exc: NotLeader) -> dict[str, str]:
    headers = {"X-Orrery-Standby": "1", "Retry-After": "1"}
    if exc.leader:
        headers["X-Orrery-Leader"] = exc.leader
    return headers


class StandbyGuard:
    """ASGI middleware: writes to ``/v1/`` on a hub that does not lead are refused."""

    def __init__(self, app: App, role: Role) -> None:
        self.app = app
        self.role = role

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in READS
            or not str(scope["path"]).startswith("/v1/")
            or self.role.leading
        ):
            await self.app(scope, receive, send)
            return
        exc = self.role.not_leader()
        body = json.dumps({"error": "NotLeader", "detail": exc.message, "retryable": True}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in standby_headers(exc).items()]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


__all__ = ["StandbyGuard", "standby_headers"]
