"""Heartbeat intake: one process simulates 1,000 spokes of 100 nodes each, every one sending
a heartbeat a second, against one hub; meanwhile single ``POST /v1/jobs`` over 16
connections, compared with the same load before the heartbeats start.

Figures: heartbeats answered per second against those sent, reply latency (p50, p99 and
the worst second: the hub keeps up when it does not grow), the hub's CPU share, and the
admission rate with and without the heartbeats.

    .venv/bin/python -m pytest -m benchmark benchmarks/bench_intake.py -s -p no:randomly
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import nats
import pytest

from benchmarks.conftest import percentile, record
from benchmarks.loadgen import body, cpu_seconds, hammer, manifest, request
from orrery import timing
from orrery.federation import Federation, Timings
from orrery.wire import Heartbeat, NodeReport, Subjects, encode

pytestmark = pytest.mark.benchmark

SPOKES = int(os.environ.get("ORRERY_BENCH_SPOKES", "1000"))
NODES = 100
SECONDS = float(os.environ.get("ORRERY_BENCH_SECONDS", "20"))
SEQ = b'"seq":1000000001'


def templates() -> list[tuple[str, bytes]]:
    """Each spoke's heartbeat, encoded once; only its seq changes (a byte substitution)."""
    out = []
    for i in range(SPOKES):
        name = f"sim-{i:04d}"
        hb = Heartbeat(
            sender=name,
            seq=1000000001,
            cluster=name,
            incarnation="bench",
            lease_s=timing.LEASE_S,
            nodes=[
                NodeReport(name=f"n{j:03d}", gpu_type="H100", gpus=8, free=list(range(8)))
                for j in range(NODES)
            ],
        )
        data = encode(hb)
        assert SEQ in data
        out.append((Subjects(name).heartbeat, data))
    return out


async def spokes(nats_url: str, seconds: float) -> dict[str, float]:
    nc = await nats.connect(nats_url, pending_size=256 * 1024 * 1024)
    beats = templates()
    latencies: list[float] = []
    per_second: list[float] = []  # the worst reply latency of each second
    sent = answered = 0
    start = time.monotonic()

    async def one(subject: str, data: bytes, bucket: list[float]) -> None:
        nonlocal answered
        t0 = time.monotonic()
        try:
            await nc.request(subject, data, timeout=10)
        except Exception:
            return
        answered += 1
        lat = time.monotonic() - t0
        latencies.append(lat)
        bucket.append(lat)

    tasks: list[asyncio.Task[None]] = []
    seq = 1000000001
    while time.monotonic() - start < seconds:
        second = time.monotonic()
        seq += 1
        bucket: list[float] = []
        stamp = f'"seq":{seq}'.encode()
        for k, (subject, data) in enumerate(beats):
            # Spread over the second, as independent spokes would be.
            due = second + k / len(beats)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(subject, data.replace(SEQ, stamp), bucket)))
            sent += 1
        rest = second + 1.0 - time.monotonic()
        if rest > 0:
            await asyncio.sleep(rest)
        per_second.append(max(bucket, default=0.0))
    await asyncio.gather(*tasks)
    took = time.monotonic() - start
    await nc.close()
    return {
        "sent_per_s": sent / took,
        "answered_per_s": answered / took,
        "answered_share": answered / sent if sent else 0.0,
        "reply_p50_ms": percentile(latencies, 50) * 1000 if latencies else 0.0,
        "reply_p99_ms": percentile(latencies, 99) * 1000 if latencies else 0.0,
        "worst_second_first_half_ms": max(per_second[: len(per_second) // 2], default=0) * 1000,
        "worst_second_second_half_ms": max(per_second[len(per_second) // 2 :], default=0) * 1000,
    }


def test_a_thousand_spokes_at_one_hertz(tmp_path: Path) -> None:
    with Federation(tmp_path / "fed", spokes=[], timings=Timings(), insecure=True) as fed:
        assert fed.api_url is not None and fed.hub is not None and fed.nats is not None
        url, token = fed.api_url, fed.admin_token
        submit = request("POST", url, "/v1/jobs", token, body(manifest("bench")))
        asyncio.run(hammer(url, submit, seconds=1.0, expect=201))  # warm
        alone = asyncio.run(hammer(url, submit, seconds=5.0, expect=201))

        async def both() -> tuple[dict[str, float], float, float]:
            beats = asyncio.create_task(spokes(fed.nats.url, SECONDS))  # type: ignore[union-attr]
            await asyncio.sleep(SECONDS / 2)  # every spoke has joined and is steady
            cpu0, t0 = cpu_seconds(fed.hub.pid), time.monotonic()  # type: ignore[union-attr]
            load = await hammer(url, submit, seconds=5.0, expect=201)
            cpu = (cpu_seconds(fed.hub.pid) - cpu0) / (time.monotonic() - t0)  # type: ignore[union-attr]
            return await beats, load.rate, cpu

        hb, during, cpu = asyncio.run(both())
    figures = {
        "spokes": SPOKES,
        "nodes_per_spoke": NODES,
        "seconds": SECONDS,
        **{k: round(v, 3 if k == "answered_share" else 1) for k, v in hb.items()},
        "hub_cpu_share_during_submissions": round(cpu, 2),
        "submissions_alone_per_s": round(alone.rate),
        "submissions_with_heartbeats_per_s": round(during),
        "submissions_ratio": round(during / alone.rate, 2) if alone.rate else 0.0,
    }
    record("intake", figures)
    assert hb["answered_share"] > 0.5  # sanity: the figures are the result
