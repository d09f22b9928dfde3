"""The gateway's ASGI application: ``/services/<name>/<path>`` to a ready replica.

Served by uvicorn, upstream through ``upstream.Upstream`` (HTTP/1.1 on asyncio streams,
a keep-alive pool per replica). Responses stream through as they arrive, so chunked
bodies and server-sent token streams reach the caller chunk by chunk.

A request that could not reach its replica (connection refused or reset before a
response: the replica died, its cluster went away) is tried on another replica; one
that got no response after it was sent is retried only when its method is idempotent.
With no ready replica (scaled to zero, or all starting) the request is held: at most
``max_held`` per service, for at most ``hold_s``, then 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from orrery_hub.gateway.pool import Pool, Replica
from orrery_hub.gateway.upstream import Broken, Dropped, Refused, Upstream

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
REGION_HEADER = b"x-orrery-region"
MAX_BODY = 16 * 1024 * 1024  # buffered so a retry can resend it
MAX_ATTEMPTS = 3


class Gateway:
    """Routing state shared by the proxy, the sync loop and the prober."""

    def __init__(
        self,
        *,
        region: str | None = None,
        hold_s: float = 30.0,
        max_held: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self.region = region
        self.hold_s = hold_s
        self.max_held = max_held
        self.clock = clock
        self.rng = random.Random(seed)
        self.pools: dict[str, Pool] = {}
        self.synced = False  # routes came from the hub at least once
        self.client: Upstream | None = None

    async def start(self) -> None:
        self.client = Upstream(connect_timeout=2.0)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    # ---- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not proxied
        path: str = scope["path"]
        if path == "/healthz":
            await _plain(send, 200 if self.synced else 503, "ok" if self.synced else "no routes")
            return
        if not path.startswith("/services/"):
            await _plain(send, 404, "not found: use /services/<name>/<path>")
            return
        name, _, rest = path[len("/services/") :].partition("/")
        pool = self.pools.get(name)
        if pool is None:
            await _plain(send, 404, f"no service {name!r}")
            return
        body = await _read_body(receive)
        if body is None:
            await _plain(send, 413, f"request body over {MAX_BODY} bytes")
            return
        await self._forward(scope, pool, rest, body, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _acquire(
        self, pool: Pool, region: str | None, tried: set[str], deadline: float
    ) -> Replica | None:
        """A replica to send to, holding the request while none is ready.

        A replica already tried is taken again only once the prober found it ready again.
        Holding also follows a refused attempt: the gateway may still route to a replica
        that has just been scaled away (its next sync drops it), and a request that hit it
        must wait for the next replica like any other, not fail at once."""
        now = self.clock()
        r = pool.pick(now, region, self.rng, tried)
        if r is not None:
            return r
        if pool.held >= self.max_held:
            return None
        pool.held += 1
        if pool.cold_since is None:
            pool.cold_since = now
        try:
            while r is None:
                left = deadline - self.clock()
                if left <= 0:
                    return None
                try:
                    await asyncio.wait_for(pool.ready_event.wait(), timeout=left)
                except TimeoutError:
                    return None
                now = self.clock()
                r = pool.pick(now, region, self.rng, tried) or pool.pick(
                    now, region, self.rng, set()
                )
                if r is None:
                    await asyncio.sleep(0.01)  # the event lags a replica marked down
            return r
        finally:
            pool.held -= 1

    async def _forward(self, scope: Scope, pool: Pool, rest: str, body: bytes, send: Send) -> None:
        assert self.client is not None
        method: str = scope["method"]
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        region = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k.lower() == REGION_HEADER),
            self.region,
        )
        query = scope.get("query_string", b"")
        target = "/" + rest + (("?" + query.decode("latin-1")) if query else "")
        tried: set[str] = set()
        t0 = self.clock()
        deadline = t0 + self.hold_s  # the whole request's hold, over every attempt
        pool.meter.up(t0)
        error = True
        try:
            for _ in range(MAX_ATTEMPTS):
                r = await self._acquire(pool, region, tried, deadline)
                if r is None:
                    break
                tried.add(r.job)
                outcome = await self._try(r, pool, method, target, headers, body, send)
                if outcome == "done":
                    error = False
                    return
                if outcome == "failed":
                    return  # the response had begun: nothing more can be sent
                if outcome == "sent" and method not in IDEMPOTENT:
                    await _plain(send, 502, f"replica {r.job} dropped the request")
                    return
            if pool.replicas and any(x.ready for x in pool.replicas.values()):
                await _plain(send, 502, "no replica could take the request")
            else:
                await _plain(
                    send,
                    503,
                    f"no ready replica of {pool.name} within {self.hold_s:g}s",
                    retry_after=1,
                )
        finally:
            now = self.clock()
            pool.meter.down(now, now - t0, error=error)

    async def _try(
        self,
        r: Replica,
        pool: Pool,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        send: Send,
    ) -> str:
        """'done', 'refused' (never reached it: retry anywhere), 'sent' (no response after
        sending: retry if idempotent) or 'failed' (broke mid-response)."""
        assert self.client is not None
        t0 = self.clock()
        r.meter.up(t0)
        started = False
        ok = False
        try:
            hostport = r.url.removeprefix("http://")
            try:
                resp = await self.client.send(hostport, method, target, headers, body)
            except Refused:
                pool.mark_down(r, self.clock())
                return "refused"
            except Dropped:
                pool.mark_down(r, self.clock())
                return "sent"
            try:
                out = [(k, v) for k, v in resp.headers if k not in HOP_BY_HOP]
                length = resp.header(b"content-length")
                if length is not None and resp.header(b"transfer-encoding") is None:
                    out.append((b"content-length", length))
                chunks = resp.body
                try:
                    first = await anext(chunks, None) if method != "HEAD" else None
                except Broken:
                    pool.mark_down(r, self.clock())
                    return "sent"
                await send(
                    {"type": "http.response.start", "status": resp.status, "headers": out}
                )
                started = True
                if first is not None:
                    await send({"type": "http.response.body", "body": first, "more_body": True})
                try:
                    async for chunk in chunks:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except Broken:
                    pool.mark_down(r, self.clock())
                    return "failed"
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                ok = resp.status < 500
                return "done"
            finally:
                await resp.aclose()
        finally:
            now = self.clock()
            r.meter.down(now, now - t0 if started else None, error=not ok)


async def _read_body(receive: Receive) -> bytes | None:
    parts: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        parts.append(chunk)
        if not msg.get("more_body", False):
            break
    return b"".join(parts)


async def _plain(send: Send, status: int, text: str, *, retry_after: int | None = None) -> None:
    body = json.dumps({"detail": text}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
