"""The gateway against real replica processes (the e2e stdlib replica), with routes given
directly instead of by a hub: routing, streaming, retries when a replica dies, holding
requests while none is ready, and the load it measures."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from orrery.natsserver import free_port
from orrery.service_resources import GatewayRoutes, Route, ServiceRoutes
from orrery_hub.gateway.pool import Pool
from orrery_hub.gateway.proxy import Gateway
from orrery_hub.gateway.sync import _probe_one, apply_routes, probe_loop

REPLICA = Path(__file__).parents[1].parent / "e2e" / "workloads" / "replica.py"


class Replicas:
    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, port: int | None = None) -> int:
        port = port or free_port()
        env = {**os.environ, "PORT": str(port), "ORRERY_JOB_NAME": name}
        env.pop("ORRERY_PROGRESS_FILE", None)
        self.procs[name] = subprocess.Popen(
            [sys.executable, str(REPLICA)], env=env, stdout=subprocess.DEVNULL
        )
        self.ports[name] = port
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return port
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"replica {name} did not listen") from None
                time.sleep(0.05)

    def kill(self, name: str) -> None:
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def replicas() -> Iterator[Replicas]:
    r = Replicas()
    yield r
    r.stop()


def routes(reps: Replicas, names: list[str], *, regions: dict[str, str] | None = None,
           scale_to_zero: bool = False) -> GatewayRoutes:
    regions = regions or {}
    return GatewayRoutes(
        services=[
            ServiceRoutes(
                name="chat",
                readiness_path="/healthz",
                scale_to_zero=scale_to_zero,
                routes=[
                    Route(job=n, endpoint=f"127.0.0.1:{reps.ports[n]}", cluster=f"c-{n}",
                          region=regions.get(n))
                    for n in names
                ],
            )
        ]
    )


@asynccontextmanager
async def gateway(**kw: object) -> AsyncIterator[tuple[Gateway, str]]:
    gw = Gateway(seed=1, **kw)  # type: ignore[arg-type]
    await gw.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(gw, log_level="warning", lifespan="off"))
    tasks = [
        asyncio.create_task(server.serve(sockets=[sock])),
        asyncio.create_task(probe_loop(gw)),
    ]
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event)
        await asyncio.sleep(0.01)
    try:
        yield gw, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await gw.close()


async def until(pred: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def ready(gw: Gateway, n: int) -> bool:
    pool = gw.pools.get("chat")
    return pool is not None and sum(r.ready for r in pool.replicas.values()) >= n


async def test_requests_are_spread_over_ready_replicas(replicas: Replicas) -> None:
    for n in ("a", "b"):
        replicas.start(n)
    async with gateway() as (gw, url), httpx.AsyncClient(base_url=url) as c:
        apply_routes(gw, routes(replicas, ["a", "b"]), gw.clock())
        await until(lambda: ready(gw, 2))
        got = await asyncio.gather(*[c.get("/services/chat/work?ms=30") for _ in range(40)])
        assert all(r.status_code == 200 for r in got)
        served = {r.json()["replica"] for r in got}
        assert served == {"a", "b"}
        echo = await c.post("/services/chat/echo", content=b"x" * 100_000)
        assert echo.content == b"x" * 100_000
        assert (await c.get("/services/nope/work")).status_code == 404
        load = gw.pools["chat"].take_load(gw.clock())
        assert load.requests == 41 and load.concurrency > 0
        assert load.latency_p50_s is not None and load.latency_p50_s >= 0.03


async def test_server_sent_events_stream_through_chunk_by_chunk(replicas: Replicas) -> None:
    replicas.start("a")
    async with gateway() as (gw, url), httpx.AsyncClient(base_url=url) as c:
        apply_routes(gw, routes(replicas, ["a"]), gw.clock())
        await until(lambda: ready(gw, 1))
        arrivals = []
        async with c.stream("GET", "/services/chat/stream?n=5") as r:
            assert r.headers["content-type"] == "text/event-stream"
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    arrivals.append((time.monotonic(), line))
        assert [x for _, x in arrivals] == [f"data: token-{i}" for i in range(5)]
        # Streamed, not buffered: the tokens arrived over time, not all at once.
        assert arrivals[-1][0] - arrivals[0][0] >= 0.04


async def test_a_dead_replica_costs_no_request(replicas: Replicas) -> None:
    for n in ("a", "b"):
        replicas.start(n)
    async with gateway() as (gw, url), httpx.AsyncClient(base_url=url) as c:
        apply_routes(gw, routes(replicas, ["a", "b"]), gw.clock())
        await until(lambda: ready(gw, 2))
        replicas.kill("a")  # the gateway still believes it ready
        got = await asyncio.gather(*[c.get("/services/chat/work?ms=5") for _ in range(30)])
        assert [r.status_code for r in got] == [200] * 30
        assert {r.json()["replica"] for r in got} == {"b"}
        assert not gw.pools["chat"].replicas["a"].ready


async def test_the_callers_region_goes_first(replicas: Replicas) -> None:
    for n in ("eu", "us"):
        replicas.start(n)
    async with gateway(region="us-east-1") as (gw, url), httpx.AsyncClient(base_url=url) as c:
        apply_routes(
            gw, routes(replicas, ["eu", "us"], regions={"eu": "eu-west-1", "us": "us-east-1"}),
            gw.clock(),
        )
        await until(lambda: ready(gw, 2))
        mine = [(await c.get("/services/chat/work?ms=1")).json()["replica"] for _ in range(10)]
        assert set(mine) == {"us"}
        theirs = await c.get("/services/chat/work?ms=1", headers={"x-orrery-region": "eu-west-1"})
        assert theirs.json()["replica"] == "eu"


async def test_with_no_replica_requests_are_held_then_refused_with_retry_after(
    replicas: Replicas,
) -> None:
    async with gateway(hold_s=0.5) as (gw, url), httpx.AsyncClient(base_url=url) as c:
        apply_routes(gw, routes(replicas, [], scale_to_zero=True), gw.clock())
        t0 = time.monotonic()
        r = await c.get("/services/chat/work")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert time.monotonic() - t0 >= 0.45


async def test_a_held_request_is_served_when_a_replica_becomes_ready(replicas: Replicas) -> None:
    async with gateway(hold_s=30) as (gw, url), httpx.AsyncClient(base_url=url, timeout=30) as c:
        apply_routes(gw, routes(replicas, [], scale_to_zero=True), gw.clock())
        pending = asyncio.create_task(c.get("/services/chat/work?ms=1"))
        await until(lambda: gw.pools["chat"].held == 1)
        assert gw.pools["chat"].take_load(gw.clock()).held == 1  # what wakes the autoscaler
        port = await asyncio.to_thread(replicas.start, "a")
        assert port
        apply_routes(gw, routes(replicas, ["a"], scale_to_zero=True), gw.clock())
        r = await pending
        assert r.status_code == 200
        load = gw.pools["chat"].take_load(gw.clock())
        assert load.cold_start_s is not None and load.cold_start_s > 0


async def test_a_request_to_a_replica_that_just_went_away_is_held_for_the_next(
    replicas: Replicas,
) -> None:
    """Scaled to zero a moment ago: the gateway still routes to the replica until its next
    sync. The request it refuses waits for the next replica, as a cold request would."""
    replicas.start("a")
    async with gateway(hold_s=30) as (gw, url), httpx.AsyncClient(base_url=url, timeout=30) as c:
        apply_routes(gw, routes(replicas, ["a"], scale_to_zero=True), gw.clock())
        await until(lambda: ready(gw, 1))
        replicas.kill("a")  # the gateway still believes it ready
        pending = asyncio.create_task(c.get("/services/chat/work?ms=1"))
        await until(lambda: gw.pools["chat"].held == 1)
        assert not pending.done()
        await asyncio.to_thread(replicas.start, "b")
        apply_routes(gw, routes(replicas, ["b"], scale_to_zero=True), gw.clock())
        r = await pending
        assert r.status_code == 200, r.text
        assert r.json()["replica"] == "b"


async def test_a_busy_replica_stays_ready_until_its_probe_times_out_three_times() -> None:
    """Under load a readiness probe may time out; taking the replica out for one would move
    its load onto the others (one slow probe had emptied a service of ready replicas). A
    refused connection or a non-2xx answer still takes it out at once."""
    answers: list[object] = []

    def handle(request: httpx.Request) -> httpx.Response:
        what = answers.pop(0)
        if isinstance(what, Exception):
            raise what
        return httpx.Response(int(what))  # type: ignore[call-overload]

    gw = Gateway(seed=1)
    pool = Pool("chat", readiness_path="/healthz", scale_to_zero=False, now=0.0)
    pool.update([Route(job="r0", endpoint="127.0.0.1:9", cluster="c")], now=0.0)
    slow = httpx.ReadTimeout("probe timed out")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:

        async def probe(*outcomes: object) -> bool:
            answers.extend(outcomes)
            for _ in outcomes:
                await _probe_one(gw, client, pool, "r0")
            return pool.replicas["r0"].ready

        assert await probe(200)
        assert await probe(slow, slow)  # busy: still in the rotation
        assert await probe(200, slow, slow)  # an answer in between starts the count again
        assert not await probe(slow)  # the third in a row: out
        assert not await probe(slow, slow, slow)  # and not back before it answers
        assert await probe(200)
        assert not await probe(httpx.ConnectError("refused"))  # gone: out at once
        assert await probe(200)
        assert not await probe(503)  # it says it is not ready: out at once
    await gw.close()
