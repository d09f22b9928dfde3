"""The gateway's two background loops, and the process that runs them beside the proxy.

- **sync**: every ``interval_s``, send this gateway's measured load to the hub and take
  back every service's routes: a NATS request answered by the leading hub, or REST as a
  fallback (``hublink``). A hub that does not answer leaves the last routes in place: the
  gateway keeps serving what it knew.
- **probe**: GET each replica's ``readinessPath``; a replica takes requests only once it
  answers 2xx, and leaves the rotation the moment it refuses the connection or answers
  anything else. A ready replica whose probe only times out is busy, not gone: it leaves
  after ``PROBE_SLOW_LIMIT`` such probes in a row (dropping it would put its load on the
  others; under load, one slow probe had taken both of a service's replicas out).

``run_gateway`` starts uvicorn and both loops in one ``asyncio.TaskGroup``: if any fails,
the others stop and the error surfaces. Several gateways may run against one hub; each
reports under its own name and the hub sums them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats.errors
import uvicorn

from orrery.cancellation import raise_if_cancelled
from orrery.service_resources import GatewayReport, GatewayRoutes
from orrery_hub.gateway.hublink import HubError, HubLink
from orrery_hub.gateway.pool import Pool
from orrery_hub.gateway.proxy import Gateway

log = logging.getLogger("orrery.gateway")
PROBE_READY_S = 1.0  # a ready replica is re-checked this often
PROBE_STARTING_S = 0.1  # one not yet ready, this often: it joins as soon as it listens
PROBE_TIMEOUT_S = 1.0
PROBE_SLOW_LIMIT = 3  # probes of a ready replica that time out, in a row, before it leaves


@dataclass(frozen=True)
class GatewaySettings:
    hub_url: str
    token: str | None
    name: str
    host: str = "127.0.0.1"
    port: int = 8090
    region: str | None = None
    interval_s: float = 0.5
    hold_s: float = 30.0
    max_held: int = 1000
    verify: bool | str = True
    state_dir: Path | None = None  # its NATS key and certificate (secure mode)


def apply_routes(gw: Gateway, routes: GatewayRoutes, now: float) -> None:
    names = set()
    for svc in routes.services:
        names.add(svc.name)
        pool = gw.pools.get(svc.name)
        if pool is None:
            pool = Pool(
                svc.name,
                readiness_path=svc.readiness_path,
                scale_to_zero=svc.scale_to_zero,
                now=now,
            )
            gw.pools[svc.name] = pool
        pool.readiness_path, pool.scale_to_zero = svc.readiness_path, svc.scale_to_zero
        pool.update(svc.routes, now=now)
    for gone in [n for n in gw.pools if n not in names]:
        del gw.pools[gone]
    if gw.client is not None:  # kept-alive connections to replicas that left: closed
        gw.client.retain({r.url.removeprefix("http://") for p in gw.pools.values()
                          for r in p.replicas.values()})
    gw.synced = True


def report(gw: Gateway, s: GatewaySettings, now: float) -> GatewayReport:
    return GatewayReport(
        gateway=s.name,
        region=s.region,
        interval_s=s.interval_s,
        services=[p.take_load(now) for p in gw.pools.values()],
    )


async def sync_loop(gw: Gateway, s: GatewaySettings, hub: HubLink) -> None:
    warned = False
    while True:
        raise_if_cancelled()
        body = report(gw, s, gw.clock()).model_dump_json(by_alias=True, exclude_none=True)
        try:
            data = await hub.exchange(body.encode())
            apply_routes(gw, GatewayRoutes.model_validate_json(data), gw.clock())
            warned = False
        # OSError: the state folder cannot be written, a TLS file cannot be loaded.
        except (httpx.HTTPError, ValueError, HubError, nats.errors.Error, OSError) as exc:
            if not warned:  # once per outage, not once per interval
                log.warning("gateway: cannot sync with the hub: %s", exc)
                warned = True
        await asyncio.sleep(s.interval_s)


async def _probe_one(gw: Gateway, client: httpx.AsyncClient, pool: Pool, job: str) -> None:
    r = pool.replicas.get(job)
    if r is None:
        return
    slow = False
    try:
        resp = await client.get(r.url + pool.readiness_path, timeout=PROBE_TIMEOUT_S)
        ok = 200 <= resp.status_code < 300
    except httpx.TimeoutException:
        ok, slow = False, True
    except httpx.HTTPError:
        ok = False
    if ok or not slow or not r.ready:
        r.slow_probes = 0
    else:
        r.slow_probes += 1
        if r.slow_probes < PROBE_SLOW_LIMIT:
            return  # busy: still in the rotation
    if ok != r.ready or not ok:
        pool.set_ready(job, ok, gw.clock())


async def probe_loop(gw: Gateway) -> None:
    checked: dict[tuple[str, str], float] = {}
    async with httpx.AsyncClient() as client:
        while True:
            now = gw.clock()
            due = []
            for pool in gw.pools.values():
                for r in pool.replicas.values():
                    key = (pool.name, r.url)
                    every = PROBE_READY_S if r.ready else PROBE_STARTING_S
                    if now - checked.get(key, -1e9) >= every:
                        checked[key] = now
                        due.append(_probe_one(gw, client, pool, r.job))
            if due:
                await asyncio.gather(*due)
            await asyncio.sleep(PROBE_STARTING_S)


async def run_gateway(s: GatewaySettings, *, on_ready: Callable[[str], None] | None = None) -> None:
    gw = Gateway(region=s.region, hold_s=s.hold_s, max_held=s.max_held)
    await gw.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # uvicorn may write headers and body separately; with Nagle on, each response waits
    # for the client's delayed ACK (~40 ms). Accepted sockets inherit this.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((s.host, s.port))
    url = f"http://{s.host}:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        gw,
        http="httptools",  # uvicorn's C parser: ~1.7x the requests per core of its h11
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    headers = {"Authorization": f"Bearer {s.token}"} if s.token else {}
    link: HubLink | None = None
    try:
        async with (
            httpx.AsyncClient(
                base_url=s.hub_url, headers=headers, timeout=5.0, verify=s.verify
            ) as hub,
            asyncio.TaskGroup() as tg,
        ):
            link = HubLink(hub, s.name, s.state_dir)
            tg.create_task(_serve(server, sock))
            tg.create_task(sync_loop(gw, s, link))
            tg.create_task(probe_loop(gw))
            while not server.started:  # noqa: ASYNC110 (uvicorn offers no event)
                await asyncio.sleep(0.02)
            log.info("gateway %s listening on %s", s.name, url)
            if on_ready is not None:
                on_ready(url)
    except* _Stopped:
        pass  # uvicorn stopped on a signal: the loops went with it
    finally:
        if link is not None:
            await link.close()
        await gw.close()


class _Stopped(Exception):
    """uvicorn returned (SIGINT/SIGTERM): ends the task group and so the other loops."""


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    await server.serve(sockets=[sock])
    raise _Stopped
