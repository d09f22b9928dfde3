"""What signed orders cost: sign + verify per order (µs), and, with signing on and off in the
same run, the hub's heartbeat intake latency and submit-to-running (p50, p99).

The A/B runs a hub and two spoke agents in one process on a real nats-server (agents with
the fake executor, so a "launch" is instant and only the control plane is measured): "off"
is a hub that stamps orders without a signature and agents with no pinned key; "on" is
the product's path (the hub signs, the agents verify against orders.pub).

The second benchmark runs real processes (nats-server, the hub, two spokes with the local
executor) in three modes in the same run: plain NATS without order verification, plain NATS
with signed orders verified (the --insecure federation), and the secure default (TLS, a
NATS user per enrolled cluster, orders verified against the key pinned at enrollment).

    ./dev bench -k security
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.conftest import percentile, record
from orrery.clusterid import SpokeIdentity
from orrery.federation import Federation, SpokeSpec, Timings
from orrery.natsserver import NatsServer
from orrery.wire import Assignment, Heartbeat, HeartbeatAck, NodeReport, Subjects, decode, encode
from orrery.wire.codec import decode_order
from orrery.wire.signing import OrderVerifier, Verdict, canonical_bytes, sign
from orrery_hub.config.settings import HubSettings, Timing
from orrery_hub.main import Hub
from orrery_spoke_agent.agent import Agent
from orrery_spoke_agent.executor.fake import FakeExecutor
from orrery_spoke_agent.inventory import Node
from orrery_spoke_agent.settings import SpokeSettings

pytestmark = pytest.mark.benchmark

ORDERS = 5000
# Modes alternate over rounds (off, on / on, off / ...) so drift in the machine's load
# lands on both; each round starts a fresh hub and agents.
ROUNDS = 4
JOBS = 40  # 1-slice jobs per mode per round (and half as many 4-slice ones)
HEARTBEATS = 200  # per mode per round
TOKEN = "bench-admin-token-" + uuid.uuid4().hex


def sample_order(seq: int) -> Assignment:
    return Assignment(
        sender="hub",
        seq=seq,
        expires_at=time.time() + 60,
        job="train-1a2b3c",
        job_name="train",
        index=0,
        epoch=2,
        world_size=8,
        node="n0",
        gpus=[0, 1, 2, 3],
        master_addr="10.0.0.5",
        master_port=29500,
        command=["python", "train.py", "--config", "configs/llama-8b.yaml"],
        env={f"VAR_{i}": "x" * 32 for i in range(16)},
        checkpoint_dir="/ckpt/train-1a2b3c",
        checkpoint="/ckpt/train-1a2b3c/step-900.pt",
        max_runtime_s=3600.0,
    )


def per_order_costs() -> dict[str, float]:
    key = Ed25519PrivateKey.generate()
    verifier = OrderVerifier(key.public_key(), time.time)
    orders = [sample_order(i) for i in range(ORDERS)]
    t0 = time.perf_counter()
    plain = [encode(o) for o in orders]
    t1 = time.perf_counter()
    signed = [encode(sign(o, key)) for o in orders]
    t2 = time.perf_counter()
    for raw in plain:
        decode_order(raw)
    t3 = time.perf_counter()
    for raw in signed:
        assert verifier.check(decode_order(raw)) is Verdict.OK
    t4 = time.perf_counter()
    body = canonical_bytes(orders[0])
    sig = key.sign(body)
    t5 = time.perf_counter()
    for _ in range(ORDERS):
        key.sign(body)
    t6 = time.perf_counter()
    for _ in range(ORDERS):
        key.public_key().verify(sig, body)
    t7 = time.perf_counter()
    us = 1e6 / ORDERS
    return {
        "ed25519_sign_us": round((t6 - t5) * us, 1),
        "ed25519_verify_us": round((t7 - t6) * us, 1),
        "order_bytes_plain": len(plain[0]),
        "order_bytes_signed": len(signed[0]),
        "encode_us": round((t1 - t0) * us, 1),
        "sign_and_encode_us": round((t2 - t1) * us, 1),
        "decode_us": round((t3 - t2) * us, 1),
        "decode_and_verify_us": round((t4 - t3) * us, 1),
        "sign_plus_verify_added_us": round(((t2 - t1) - (t1 - t0) + (t4 - t3) - (t3 - t2)) * us, 1),
    }


@contextlib.asynccontextmanager
async def federation(
    tmp: Path, nats_url: str, *, signing: bool
) -> AsyncIterator[tuple[Hub, list[Agent]]]:
    settings = HubSettings(
        state_dir=tmp / "hub",
        nats_url=nats_url,
        port=0,
        timing=Timing(heartbeat_interval_s=1.0),
        insecure=True,
        admin_token=TOKEN,
        write_rate_per_s=0,
    )
    hub = Hub(settings)
    if not signing:
        seq = itertools.count(int(time.time() * 1_000_000))

        def unsigned(o: Assignment | object) -> object:  # the stamp before signing existed
            return o.model_copy(update={"seq": next(seq)})  # type: ignore[attr-defined]

        hub.stamp = unsigned  # type: ignore[method-assign,assignment]
    ready = asyncio.Event()
    hub_task = asyncio.create_task(hub.run(on_ready=lambda _e: ready.set()))
    await asyncio.wait_for(ready.wait(), 30)
    pub = settings.state_dir / "identity" / "orders.pub"
    agents, tasks = [], []
    for i in range(2):
        name = f"bench-{i}-{uuid.uuid4().hex[:4]}"
        s = SpokeSettings(
            nats_url=nats_url,
            cluster=name,
            state_dir=tmp / name,
            heartbeat_interval_s=1.0,
            lease_s=10.0,
            insecure=True,
            hub_key_file=pub if signing else None,
        )
        agent = Agent(s, FakeExecutor(), [Node(f"{name}-n{j}", "H100", 8, 81920) for j in range(4)])
        agents.append(agent)
        tasks.append(asyncio.create_task(agent.run()))
    for a in agents:
        await asyncio.wait_for(a.heartbeat_ok.wait(), 30)
    try:
        yield hub, agents
    finally:
        for a in agents:
            a.shutdown()
        await asyncio.gather(*tasks)
        hub.stop()
        await hub_task


def manifest(slices: int) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "TrainingJob",
            "metadata": {"name": "sec"},
            "spec": {"slices": slices, "gpusPerSlice": 1, "command": ["sleep", "30"]},
        }
    )


async def submit_to_running(api: httpx.AsyncClient, slices: int) -> float:
    t0 = time.perf_counter()
    r = await api.post("/v1/jobs", content=manifest(slices))
    r.raise_for_status()
    job_id = r.json()["id"]
    while True:
        j = (await api.get(f"/v1/jobs/{job_id}")).json()
        if all(s["phase"] == "Running" for s in j["status"]["slices"]):
            elapsed = time.perf_counter() - t0
            break
        assert time.perf_counter() - t0 < 30, f"job {job_id} not running after 30 s: {j}"
        await asyncio.sleep(0.002)
    (await api.delete(f"/v1/jobs/{job_id}")).raise_for_status()
    return elapsed


async def heartbeat_intake(nats_url: str) -> list[float]:
    """Round trips of a heartbeat from a cluster with 4 nodes and nothing running."""
    cluster = f"hb-{uuid.uuid4().hex[:6]}"
    nc = await nats.connect(nats_url)
    subjects = Subjects(cluster)
    nodes = [
        NodeReport(name=f"n{i}", gpu_type="H100", gpus=8, free=list(range(8))) for i in range(4)
    ]
    out = []
    try:
        for i in range(HEARTBEATS + 20):
            hb = Heartbeat(
                sender=f"spoke/{cluster}",
                seq=i + 1,
                cluster=cluster,
                incarnation="bench",
                lease_s=10.0,
                nodes=nodes,
            )
            t0 = time.perf_counter()
            reply = await nc.request(subjects.heartbeat, encode(hb), timeout=5)
            elapsed = time.perf_counter() - t0
            assert decode(reply.data, HeartbeatAck).accepted
            if i >= 20:  # the first ones persist the new cluster
                out.append(elapsed)
    finally:
        await nc.close()
    return out


Samples = dict[str, list[float]]


async def measure(tmp: Path, nats_url: str, signing: bool, into: Samples) -> None:
    async with federation(tmp, nats_url, signing=signing) as (hub, agents):
        assert hub.endpoints is not None
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            base_url=hub.endpoints.api_url, headers=auth, timeout=30
        ) as api:
            for _ in range(5):
                await submit_to_running(api, 1)
            one = [await submit_to_running(api, 1) for _ in range(JOBS)]
            four = [await submit_to_running(api, 4) for _ in range(JOBS // 2)]
        hb = await heartbeat_intake(nats_url)
        refused = sum(sum(a.orders.refused.values()) for a in agents)
        accepted = sum(a.orders.accepted for a in agents)
        verified = all(a.orders.verifier is not None for a in agents)
    assert refused == 0 and accepted > 0 and verified == signing
    into.setdefault("one", []).extend(one)
    into.setdefault("four", []).extend(four)
    into.setdefault("hb", []).extend(hb)
    into.setdefault("accepted", []).append(accepted)


def summary(x: Samples) -> dict[str, float]:
    return {
        "submit_to_running_1_slice_p50_ms": round(statistics.median(x["one"]) * 1000, 2),
        "submit_to_running_1_slice_p99_ms": round(percentile(x["one"], 99) * 1000, 2),
        "submit_to_running_4_slices_p50_ms": round(statistics.median(x["four"]) * 1000, 2),
        "heartbeat_intake_p50_ms": round(statistics.median(x["hb"]) * 1000, 3),
        "heartbeat_intake_p99_ms": round(percentile(x["hb"], 99) * 1000, 3),
        "orders_accepted": sum(x["accepted"]),
    }


def test_signing_costs(tmp_path: Path) -> None:
    costs = per_order_costs()
    server = NatsServer().start()
    try:

        async def rounds() -> tuple[Samples, Samples]:
            off: Samples = {}
            on: Samples = {}
            for r in range(ROUNDS):
                for signing in (False, True) if r % 2 == 0 else (True, False):
                    into = on if signing else off
                    await measure(tmp_path / f"r{r}-{signing}", server.url, signing, into)
            return off, on

        off_samples, on_samples = asyncio.run(rounds())
        off, on = summary(off_samples), summary(on_samples)
    finally:
        server.stop()
    figures: dict[str, object] = {
        "orders_timed": ORDERS,
        "rounds": ROUNDS,
        "jobs_per_mode": JOBS * ROUNDS,
        "heartbeats_per_mode": HEARTBEATS * ROUNDS,
        "per_order": costs,
        "signing_off": off,
        "signing_on": on,
        "added_submit_to_running_p50_ms": round(
            on["submit_to_running_1_slice_p50_ms"] - off["submit_to_running_1_slice_p50_ms"], 2
        ),
        "added_heartbeat_intake_p50_ms": round(
            on["heartbeat_intake_p50_ms"] - off["heartbeat_intake_p50_ms"], 3
        ),
        "tls": "see test_tls_and_signing_on_a_real_federation (security_federation)",
    }
    record("security", figures)
    assert costs["decode_and_verify_us"] < 5000  # sanity only: the figures are the result


# ---- TLS: the real federation, secure vs development mode -----------------------------

REAL_ROUNDS = 2
REAL_JOBS = 30  # 1-slice jobs per mode per round
REAL_HEARTBEATS = 150


def real_manifest() -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "TrainingJob",
            "metadata": {"name": "tls"},
            "spec": {
                "slices": 1,
                "gpusPerSlice": 1,
                "command": [sys.executable, "-c", "import time; time.sleep(30)"],
            },
        }
    )


def real_submit_to_running(api: httpx.Client) -> float:
    t0 = time.perf_counter()
    r = api.post("/v1/jobs", content=real_manifest())
    r.raise_for_status()
    job_id = r.json()["id"]
    while True:
        j = api.get(f"/v1/jobs/{job_id}").json()
        if all(s["phase"] == "Running" for s in j["status"]["slices"]):
            elapsed = time.perf_counter() - t0
            break
        assert time.perf_counter() - t0 < 30, f"job {job_id} not running after 30 s: {j}"
        time.sleep(0.002)
    api.delete(f"/v1/jobs/{job_id}").raise_for_status()
    return elapsed


async def real_heartbeats(fed: Federation, secure: bool) -> list[float]:
    """Heartbeat round trips from a cluster that reports like a spoke (4 nodes): over TLS
    with an enrolled identity in the secure mode, plain NATS otherwise."""
    assert fed.nats is not None
    name = f"hb-{uuid.uuid4().hex[:6]}"
    labels = {"region": "bench-1"}
    if secure:
        state = fed.state / "bench-hb" / name
        await asyncio.to_thread(fed.enroll, name, labels, state)
        nc = await nats.connect(
            fed.nats.url,
            tls=SpokeIdentity.under(state).ssl_context(),
            inbox_prefix=f"_INBOX_{name}",
        )
    else:
        nc = await nats.connect(fed.nats.url)
    subjects = Subjects(name)
    nodes = [
        NodeReport(name=f"n{i}", gpu_type="H100", gpus=8, free=list(range(8))) for i in range(4)
    ]
    out = []
    try:
        for i in range(REAL_HEARTBEATS + 20):
            hb = Heartbeat(
                sender=f"spoke/{name}",
                seq=i + 1,
                cluster=name,
                incarnation="bench",
                labels=labels,
                lease_s=2.0,
                nodes=nodes,
            )
            t0 = time.perf_counter()
            reply = await nc.request(subjects.heartbeat, encode(hb), timeout=5)
            elapsed = time.perf_counter() - t0
            ack = decode(reply.data, HeartbeatAck)
            assert ack.accepted, ack.reason
            if i >= 20:
                out.append(elapsed)
    finally:
        await nc.close()
    return out


def real_mode(tmp: Path, mode: str, into: Samples) -> None:
    specs = [SpokeSpec(f"tls-{i}", f"tls-{i}-1", "H100", 2, 8) for i in range(2)]
    fed = Federation(
        tmp,
        spokes=specs,
        timings=Timings(heartbeat_s=1.0),
        insecure=mode != "secure",
        verify_orders=mode != "plain",
    )
    with fed:
        assert fed.api_url is not None and fed.nats is not None
        assert fed.nats.url.startswith("tls://") == (mode == "secure")
        auth = {"Authorization": f"Bearer {fed.admin_token}"}
        with httpx.Client(base_url=fed.api_url, timeout=30, headers=auth) as api:
            for _ in range(3):
                real_submit_to_running(api)
            into.setdefault("one", []).extend(real_submit_to_running(api) for _ in range(REAL_JOBS))
        into.setdefault("hb", []).extend(asyncio.run(real_heartbeats(fed, mode == "secure")))


def test_tls_and_signing_on_a_real_federation(tmp_path: Path) -> None:
    """Real processes (nats-server, the hub, two spokes with the local executor), three
    modes in the same run: plain NATS with no order verification; plain NATS with signed
    orders verified (the --insecure federation); and the secure default (TLS, a NATS user
    per enrolled cluster, signed orders verified against the enrolled key)."""
    samples: dict[str, Samples] = {"plain": {}, "signed": {}, "secure": {}}
    order = ["plain", "signed", "secure"]
    for r in range(REAL_ROUNDS):
        for mode in order if r % 2 == 0 else order[::-1]:
            real_mode(tmp_path / f"r{r}-{mode}", mode, samples[mode])

    def p50(mode: str, what: str, scale: float = 1000) -> float:
        return round(statistics.median(samples[mode][what]) * scale, 3)

    def p99(mode: str, what: str) -> float:
        return round(percentile(samples[mode][what], 99) * 1000, 3)

    figures: dict[str, object] = {
        "rounds": REAL_ROUNDS,
        "jobs_per_mode": REAL_JOBS * REAL_ROUNDS,
        "heartbeats_per_mode": REAL_HEARTBEATS * REAL_ROUNDS,
        **{
            mode: {
                "submit_to_running_1_slice_p50_ms": p50(mode, "one"),
                "submit_to_running_1_slice_p99_ms": p99(mode, "one"),
                "heartbeat_intake_p50_ms": p50(mode, "hb"),
                "heartbeat_intake_p99_ms": p99(mode, "hb"),
            }
            for mode in order
        },
        "added_by_signing_submit_p50_ms": round(p50("signed", "one") - p50("plain", "one"), 3),
        "added_by_tls_and_identity_submit_p50_ms": round(
            p50("secure", "one") - p50("signed", "one"), 3
        ),
        "added_by_all_submit_p50_ms": round(p50("secure", "one") - p50("plain", "one"), 3),
        "added_by_tls_and_identity_heartbeat_p50_ms": round(
            p50("secure", "hb") - p50("signed", "hb"), 3
        ),
        "added_by_all_heartbeat_p50_ms": round(p50("secure", "hb") - p50("plain", "hb"), 3),
        "note": "plain still signs at the hub (the spokes do not verify)",
    }
    record("security_federation", figures)
    assert figures["secure"]  # the figures are the result
