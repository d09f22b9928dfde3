"""``GET /v1/jobs/{id}/logs`` against a real hub and a real spoke agent on a real NATS
(the fake executor stands in for the processes, so the test writes their output): every
attempt under its header, one alone, tails, following until the attempt ends, and the
errors a user meets — no such slice or epoch, nothing placed yet, a cluster that does not
answer, output removed after retention."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from orrery.natsserver import NatsServer
from orrery.wire import SliceKey
from orrery_hub.main import Hub
from orrery_spoke_agent.agent import Agent
from orrery_spoke_agent.executor.fake import FakeExecutor
from orrery_spoke_agent.inventory import Node
from orrery_spoke_agent.settings import SpokeSettings
from tests.conftest import ADMIN, FAST

JOB = """
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: logs-job}
spec: {slices: 2, gpusPerSlice: 1, command: ["python", "train.py"]}
"""


@dataclass
class World:
    api: httpx.AsyncClient
    hub: Hub
    agent: Agent
    fake: FakeExecutor
    cluster: str
    task: asyncio.Task[None]


async def until(check: Callable[[], Awaitable[Any]], what: str, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def world(hub: Hub, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[World]:
    cluster = f"logs-{uuid.uuid4().hex[:6]}"
    fake = FakeExecutor()
    settings = SpokeSettings(
        nats_url=nats_server.url, cluster=cluster, state_dir=tmp_path / "spoke",
        heartbeat_interval_s=FAST.heartbeat_interval_s, lease_s=FAST.lease_s,
        kill_grace_s=FAST.kill_grace_s, insecure=True,
    )  # fmt: skip
    agent = Agent(settings, fake, [Node("n0", "H100", 8, 81920)])
    task = asyncio.create_task(agent.run())
    assert hub.endpoints is not None
    try:
        await asyncio.wait_for(agent.heartbeat_ok.wait(), 60)
        async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as api:
            yield World(api, hub, agent, fake, cluster, task)
    finally:
        agent.shutdown()
        await asyncio.wait_for(task, 60)


async def running_job(w: World) -> tuple[str, list[SliceKey]]:
    r = await w.api.post("/v1/jobs", content=JOB)
    assert r.status_code == 201, r.text
    job = r.json()["id"]

    async def launched() -> list[SliceKey]:
        keys = [a.key for a in w.fake.launched if a.job == job]
        return sorted(keys, key=lambda k: k.index) if len(keys) == 2 else []

    return job, await until(launched, "both slices launched")


async def test_every_attempt_under_its_header_or_one_alone_with_a_tail(world: World) -> None:
    w = world
    job, (k0, k1) = await running_job(w)
    w.fake.write(k0, "rank 0 step 1\nrank 0 step 2\n")
    w.fake.write(k1, "rank 1 step 1")  # no final newline: the next header starts a line
    r = await w.api.get(f"/v1/jobs/{job}/logs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    e = k0.epoch
    assert r.text == (
        f"==> slice 0 · epoch {e} · {w.cluster} · Running <==\n"
        "rank 0 step 1\nrank 0 step 2\n"
        f"==> slice 1 · epoch {e} · {w.cluster} · Running <==\n"
        "rank 1 step 1\n"
    ), r.text
    one = await w.api.get(f"/v1/jobs/{job}/logs", params={"slice": 0, "tail": 1})
    assert one.text == "rank 0 step 2\n"  # one attempt: its bytes alone, no header
    same = await w.api.get(f"/v1/jobs/{job}/logs", params={"slice": 0, "epoch": e})
    assert same.text == "rank 0 step 1\nrank 0 step 2\n"


async def test_following_streams_until_the_attempt_ends(world: World) -> None:
    w = world
    job, (k0, _k1) = await running_job(w)
    w.fake.write(k0, "first\n")
    got = b""
    async with w.api.stream(
        "GET", f"/v1/jobs/{job}/logs", params={"slice": 0, "follow": "true"}, timeout=60
    ) as r:
        assert r.status_code == 200
        async for chunk in r.aiter_bytes():
            got += chunk
            if got == b"first\n":
                w.fake.write(k0, "second\n")
            elif got == b"first\nsecond\n":
                w.fake.write(k0, "last\n")
                w.fake.finish(k0, 0)  # the attempt ends: so does the stream
    assert got == b"first\nsecond\nlast\n"


async def test_clear_errors(world: World) -> None:
    w = world
    job, (k0, k1) = await running_job(w)
    r = await w.api.get(f"/v1/jobs/{job}/logs", params={"slice": 5})
    assert r.status_code == 422 and "has 2 slice(s)" in r.json()["detail"]
    r = await w.api.get(f"/v1/jobs/{job}/logs", params={"slice": 0, "epoch": 99})
    assert r.status_code == 404, r.text
    assert f"no epoch 99 for slice 0; its epochs: {k0.epoch}" in r.json()["detail"]
    r = await w.api.get("/v1/jobs/nope-000000/logs")
    assert r.status_code == 404
    r = await w.api.get(f"/v1/jobs/{job}/logs", params={"tail": 100_001})
    assert r.status_code == 422 and "tail" in r.text
    # Removed on the spoke (its retention): 410, saying so.
    w.fake.removed.add((k1.job, k1.index, k1.epoch))
    r = await w.api.get(f"/v1/jobs/{job}/logs", params={"slice": 1})
    assert r.status_code == 410, r.text
    assert f"no longer on cluster {w.cluster}" in r.json()["detail"]
    assert "retention" in r.json()["detail"]
    # Several attempts: the one whose output is gone says so in its place.
    w.fake.write(k0, "still here\n")
    r = await w.api.get(f"/v1/jobs/{job}/logs")
    assert r.status_code == 200
    assert "still here\n==> slice 1" in r.text and "[orrery] the output of slice 1" in r.text
    # The spoke stops: its cluster does not answer, and the error names it.
    w.agent.shutdown()
    await asyncio.wait_for(w.task, 60)
    r = await w.api.get(f"/v1/jobs/{job}/logs", params={"slice": 0})
    assert r.status_code == 503, r.text
    assert f"cluster {w.cluster} did not answer" in r.json()["detail"]


async def test_a_job_not_placed_yet_has_no_output(hub: Hub) -> None:
    assert hub.endpoints is not None
    big = JOB.replace("gpusPerSlice: 1", "gpusPerSlice: 1, gpuType: B300")
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as api:
        job = (await api.post("/v1/jobs", content=big)).json()["id"]
        r = await api.get(f"/v1/jobs/{job}/logs")
    assert r.status_code == 409
    assert "has no output yet: no slice has been placed; it is Pending" in r.json()["detail"]
