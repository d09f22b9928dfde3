"""What cluster identity costs on the wire: NATS with TLS and per-cluster users (the secure
default) against plain NATS (``--insecure``), orders signed in both, in the same run.

Each mode runs a hub and two spoke agents in one process (the fake executor, so only the
control plane is measured). Secure: the hub starts its own nats-server from the config it
generates, every agent enrolls with a join token and connects with its certificate, and
heartbeats are checked against the enrollments. Figures: submit-to-running p50 (1 slice)
and heartbeat intake p50/p99 (a request/reply round trip of a 4-node heartbeat, from an
enrolled client in secure mode).

    ./dev bench -k tls
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import yaml

from benchmarks.conftest import percentile, record
from orrery.clusterid import SpokeIdentity, inbox_prefix
from orrery.natsserver import NatsServer
from orrery.wire import Heartbeat, HeartbeatAck, NodeReport, Subjects, decode, encode
from orrery_hub.config.settings import HubSettings, Timing
from orrery_hub.main import Hub
from orrery_spoke_agent.agent import Agent
from orrery_spoke_agent.executor.fake import FakeExecutor
from orrery_spoke_agent.inventory import Node
from orrery_spoke_agent.settings import SpokeSettings

pytestmark = pytest.mark.benchmark

ROUNDS = 4  # modes alternate (plain, tls / tls, plain / ...) so load drift lands on both
JOBS = 30
HEARTBEATS = 200
TOKEN = "bench-admin-token-" + uuid.uuid4().hex


async def enroll(hub: Hub, name: str, state: Path) -> SpokeIdentity:
    assert hub.identity is not None and hub.endpoints is not None
    token = await hub.identity.create_token(
        hub.store, cluster=name, ttl_s=600, labels={}, now=time.time()
    )
    ident = SpokeIdentity.under(state)
    await asyncio.to_thread(ident.join, hub.endpoints.api_url, token, name)
    return ident


@contextlib.asynccontextmanager
async def federation(
    tmp: Path, nats_url: str | None, *, secure: bool
) -> AsyncIterator[tuple[Hub, SpokeIdentity | None]]:
    settings = HubSettings(
        state_dir=tmp / "hub",
        nats_url=None if secure else nats_url,
        port=0,
        timing=Timing(heartbeat_interval_s=1.0),
        insecure=not secure,
        admin_token=TOKEN,
        write_rate_per_s=0,
    )
    hub = Hub(settings)
    ready = asyncio.Event()
    hub_task = asyncio.create_task(hub.run(on_ready=lambda _e: ready.set()))
    await asyncio.wait_for(ready.wait(), 30)
    assert hub.nats_url is not None
    pub = settings.state_dir / "identity" / "orders.pub"
    agents, tasks = [], []
    for i in range(2):
        name = f"bench-{i}-{uuid.uuid4().hex[:4]}"
        ident = await enroll(hub, name, tmp / name) if secure else None
        s = SpokeSettings(
            nats_url=hub.nats_url,
            cluster=name,
            state_dir=tmp / name,
            heartbeat_interval_s=1.0,
            lease_s=10.0,
            insecure=not secure,
            hub_key_file=pub,
        )
        nodes = [Node(f"{name}-n{j}", "H100", 8, 81920) for j in range(4)]
        agent = Agent(s, FakeExecutor(), nodes, identity=ident)
        agents.append(agent)
        tasks.append(asyncio.create_task(agent.run()))
    for a in agents:
        await asyncio.wait_for(a.heartbeat_ok.wait(), 30)
    probe = await enroll(hub, "hb-probe", tmp / "hb-probe") if secure else None
    try:
        yield hub, probe
    finally:
        for a in agents:
            a.shutdown()
        await asyncio.gather(*tasks)
        hub.stop()
        await hub_task


def manifest() -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "TrainingJob",
            "metadata": {"name": "tls"},
            "spec": {"slices": 1, "gpusPerSlice": 1, "command": ["sleep", "30"]},
        }
    )


async def submit_to_running(api: httpx.AsyncClient) -> float:
    t0 = time.perf_counter()
    r = await api.post("/v1/jobs", content=manifest())
    r.raise_for_status()
    job_id = r.json()["id"]
    while True:
        j = (await api.get(f"/v1/jobs/{job_id}")).json()
        if all(s["phase"] == "Running" for s in j["status"]["slices"]):
            elapsed = time.perf_counter() - t0
            break
        assert time.perf_counter() - t0 < 30, f"job {job_id} not running after 30 s"
        await asyncio.sleep(0.002)
    (await api.delete(f"/v1/jobs/{job_id}")).raise_for_status()
    return elapsed


async def heartbeat_intake(url: str, probe: SpokeIdentity | None) -> list[float]:
    cluster = "hb-probe" if probe is not None else f"hb-{uuid.uuid4().hex[:6]}"
    kw: dict[str, Any] = {}
    if probe is not None:
        ctx: ssl.SSLContext = probe.ssl_context()
        kw = {"tls": ctx, "inbox_prefix": inbox_prefix(cluster)}
    nc = await nats.connect(url, **kw)
    nodes = [
        NodeReport(name=f"n{i}", gpu_type="H100", gpus=8, free=list(range(8))) for i in range(4)
    ]
    out = []
    try:
        for i in range(HEARTBEATS + 20):
            hb = Heartbeat(
                sender=f"spoke/{cluster}", seq=i + 1, cluster=cluster, incarnation="bench",
                lease_s=10.0, nodes=nodes,
            )  # fmt: skip
            t0 = time.perf_counter()
            reply = await nc.request(Subjects(cluster).heartbeat, encode(hb), timeout=5)
            elapsed = time.perf_counter() - t0
            assert decode(reply.data, HeartbeatAck).accepted
            if i >= 20:
                out.append(elapsed)
    finally:
        await nc.close()
    return out


Samples = dict[str, list[float]]


async def measure(tmp: Path, nats_url: str, secure: bool, into: Samples) -> None:
    async with federation(tmp, nats_url, secure=secure) as (hub, probe):
        assert hub.endpoints is not None and hub.nats_url is not None
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            base_url=hub.endpoints.api_url, headers=auth, timeout=30
        ) as api:
            for _ in range(5):
                await submit_to_running(api)
            one = [await submit_to_running(api) for _ in range(JOBS)]
        hb = await heartbeat_intake(hub.nats_url, probe)
    into.setdefault("one", []).extend(one)
    into.setdefault("hb", []).extend(hb)


def summary(x: Samples) -> dict[str, float]:
    return {
        "submit_to_running_1_slice_p50_ms": round(statistics.median(x["one"]) * 1000, 2),
        "submit_to_running_1_slice_p99_ms": round(percentile(x["one"], 99) * 1000, 2),
        "heartbeat_intake_p50_ms": round(statistics.median(x["hb"]) * 1000, 3),
        "heartbeat_intake_p99_ms": round(percentile(x["hb"], 99) * 1000, 3),
    }


def test_tls_and_identity_costs(tmp_path: Path) -> None:
    server = NatsServer().start()  # the plain one; the secure hub starts its own
    try:

        async def rounds() -> tuple[Samples, Samples]:
            plain: Samples = {}
            tls: Samples = {}
            for r in range(ROUNDS):
                for secure in (False, True) if r % 2 == 0 else (True, False):
                    into = tls if secure else plain
                    await measure(tmp_path / f"r{r}-{secure}", server.url, secure, into)
            return plain, tls

        plain_s, tls_s = asyncio.run(rounds())
        plain, tls = summary(plain_s), summary(tls_s)
    finally:
        server.stop()
    figures: dict[str, object] = {
        "rounds": ROUNDS,
        "jobs_per_mode": JOBS * ROUNDS,
        "heartbeats_per_mode": HEARTBEATS * ROUNDS,
        "plain_nats": plain,
        "tls_and_identity": tls,
        "added_submit_to_running_p50_ms": round(
            tls["submit_to_running_1_slice_p50_ms"] - plain["submit_to_running_1_slice_p50_ms"], 2
        ),
        "added_heartbeat_intake_p50_ms": round(
            tls["heartbeat_intake_p50_ms"] - plain["heartbeat_intake_p50_ms"], 3
        ),
    }
    record("tls", figures)
    print(figures)
    assert tls["heartbeat_intake_p50_ms"] > 0
