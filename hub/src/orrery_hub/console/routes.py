"""Routes of the web console: the page and its assets (open: they hold no data), and the
read-only API routes the page needs beyond the CLI's (behind a token like every other).

Authentication is the API's own: the page asks for a token once, keeps it in the tab's
``sessionStorage`` and sends it as ``Authorization: Bearer`` on each fetch. No cookie is
set, so no request is ever authenticated by the browser on its own (no CSRF surface), and
the token never appears in a URL or a server log. Live updates use a server-sent event
stream read with ``fetch`` (``EventSource`` cannot send a header).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from orrery.resources import JOB_PHASES
from orrery_hub.auth import Permission, Principal, require
from orrery_hub.console.views import budgets_view, queues_view
from orrery_hub.policy.cost import period_start

if TYPE_CHECKING:
    from orrery_hub.api.protocol import HubApi

ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# Everything the page loads comes from this hub: a CDN or inline script would be refused.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
STREAM_PERIOD_S = 1.0  # how often the stream looks for a change
STREAM_TICK_S = 10.0  # and sends a tick regardless (keeps proxies from closing it)


def _asset(name: str) -> bytes:
    return (resources.files("orrery_hub.console") / "static" / name).read_bytes()


def console_routes(hub: HubApi, denied: dict[int | str, dict[str, Any]]) -> APIRouter:
    r = APIRouter()

    @r.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8",
                        headers=HEADERS)

    @r.get("/console/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, f"no console asset {name!r}")
        return Response(_asset(name), media_type=ASSETS[name], headers=HEADERS)

    @r.get(
        "/v1/queues",
        responses=denied,
        summary="Queues: weight, guarantee, cohort, GPUs in use, borrowing, pending jobs in order",
    )
    async def queues(who: Annotated[Principal, require(Permission.JOBS_READ)]) -> dict[str, Any]:
        team = who.team if who.team_scoped else None
        pending = await hub.list_jobs("Pending", 10_000, team=team)
        running = await hub.list_jobs("Running", 10_000, team=team)
        return {"items": queues_view(hub.settings.queues, pending, running)}

    @r.get(
        "/v1/budgets",
        responses=denied,
        summary="Each team's spend in the current period against its budgets",
    )
    async def budgets(who: Annotated[Principal, require(Permission.USAGE_READ)]) -> dict[str, Any]:
        rules = hub.gate.current.budgets
        now = hub.clock()
        team = who.team if who.team_scoped else None
        spend: dict[tuple[str, str], float] = {}
        teams: set[str] = set()
        for period in {b.period for b in rules}:
            u = await hub.usage(team=team, since=period_start(period, now))
            for name, t in u.teams.items():
                spend[(period, name)] = t.cost
                teams.add(name)
        rows = budgets_view(rules, spend, teams)
        if team is not None:
            rows = [row for row in rows if row["team"] == team]
        return {"now": now, "items": rows}

    @r.get(
        "/v1/stream",
        # Not in the OpenAPI schema: it never ends, which a schema fuzzer would wait on.
        include_in_schema=False,
    )
    async def stream(
        request: Request, who: Annotated[Principal, require(Permission.JOBS_READ)]
    ) -> StreamingResponse:
        async def digest() -> str:
            counts = await hub.job_counts()
            clusters = [
                (c.name, c.state, c.running_slices, {t: g.free for t, g in c.gpus.items()})
                for c in await hub.clusters()
            ]
            text = json.dumps([[counts.get(p, 0) for p in JOB_PHASES], clusters], default=str)
            return hashlib.sha256(text.encode()).hexdigest()[:16]

        async def events() -> AsyncIterator[bytes]:
            last = ""
            quiet = 0.0
            while not await request.is_disconnected():
                d = await digest()
                if d != last:
                    last, quiet = d, 0.0
                    yield f"event: change\ndata: {json.dumps({'digest': d})}\n\n".encode()
                elif quiet >= STREAM_TICK_S:
                    quiet = 0.0
                    yield b"event: tick\ndata: {}\n\n"
                await asyncio.sleep(STREAM_PERIOD_S)
                quiet += STREAM_PERIOD_S

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return r
