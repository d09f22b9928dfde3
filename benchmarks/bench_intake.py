"""Heartbeat intake: 1,000 simulated spokes of 100 nodes each, every one sending a heartbeat
a second, against one hub; meanwhile single ``POST /v1/jobs`` over 16 connections,
compared with the same load before the heartbeats start.

The spokes are simulated by ``ORRERY_BENCH_SENDERS`` processes (2 by default), apart
from the one that submits: one Python process sending a thousand requests a second and
submitting as well measured itself, not the hub. Each sender publishes pre-encoded
heartbeats (only the seq changes) with a reply subject under one inbox it subscribes to,
rather than a request each (a future, a timer and a task per heartbeat), so that it
reaches the rate on a small machine.

Figures: heartbeats sent and answered per second, reply latency (p50, p99 and the worst
second: the hub keeps up when it does not grow), the CPU shares of the hub, the senders and
nats-server with heartbeats alone (3 s just before the submissions), the hub's share
during the submissions, and the admission
rate before any cluster joined, during the heartbeats, and just after them (the thousand
clusters still Ready, silent for less than the failover timeout): a hub that knows 100,000
nodes admits more slowly whether or not they report, and the last figure tells the two
apart. The target, submissions meanwhile still within 20% of the single-POST figure
(1,000 admitted jobs a second), is checked against ``SUBMIT_TARGET_PER_S``; the ratio to
the rate alone is printed beside it (on two shared cores it also measures the machine:
the senders, nats-server and the submitting client take CPU from the hub).

    .venv/bin/python -m pytest -m benchmark benchmarks/bench_intake.py -s -p no:randomly
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from benchmarks.conftest import percentile, record
from benchmarks.loadgen import body, cpu_seconds, hammer, manifest, request
from orrery import timing
from orrery.federation import Federation, Timings
from orrery.wire import Heartbeat, NodeReport, Subjects, encode

pytestmark = pytest.mark.benchmark

SPOKES = int(os.environ.get("ORRERY_BENCH_SPOKES", "1000"))
SENDERS = int(os.environ.get("ORRERY_BENCH_SENDERS", "2"))
NODES = 100
SECONDS = float(os.environ.get("ORRERY_BENCH_SECONDS", "20"))
REPLY_TIMEOUT = 10.0  # a reply later than this counts as not answered
TICK = 0.01  # a sender publishes what is due every 10 ms
SEQ = b'"seq":1000000001'
QUIET_S = 3.0  # heartbeats alone, just before the submissions start
SUBMIT_TARGET_PER_S = 1000  # single POST /v1/jobs (bench_admission), met within 20% here


def nats_pid(fed: Federation) -> int | None:
    server = fed.nats
    proc = server.proc if server is not None else None
    return proc.pid if proc is not None else None


def templates(first: int, count: int) -> list[tuple[str, bytes]]:
    """Each spoke's heartbeat, encoded once; only its seq changes (a byte substitution)."""
    out = []
    for i in range(first, first + count):
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


async def spokes(
    nats_url: str, first: int, count: int, seconds: float, ready: Any, go: Any, start: Any
) -> dict[str, Any]:
    """Spokes ``first`` .. ``first + count - 1``, each beating once a second for
    ``seconds``, spread evenly over the second. Once connected and with its heartbeats
    encoded, the sender sets ``ready``; when ``go`` is set, it starts at ``start.value``
    (wall clock, shared by every sender). Started at a fixed delay instead, a sender slow
    to start (spawned, importing, encoding on a loaded machine) joined its clusters inside
    the seconds measured as steady."""
    nc = await nats.connect(nats_url, pending_size=256 * 1024 * 1024)
    beats = templates(first, count)
    ready.set()
    if not await asyncio.to_thread(go.wait, 120):
        raise TimeoutError("no go from the benchmark")
    inbox = nc.new_inbox()
    sent_at: dict[int, tuple[float, int]] = {}  # message number -> (sent, which second)
    latencies: list[float] = []
    worst: list[float] = []  # per second sent, the worst reply latency
    n = 0
    sending = True
    drained = asyncio.Event()  # every reply in, once sending is over

    async def on_reply(msg: Msg) -> None:
        got = sent_at.pop(int(msg.subject.rsplit(".", 1)[1]), None)
        if got is None:
            return
        lat = time.monotonic() - got[0]
        if not sent_at and not sending:
            drained.set()
        if lat <= REPLY_TIMEOUT:
            latencies.append(lat)
            worst[got[1]] = max(worst[got[1]], lat)

    await nc.subscribe(inbox + ".*", cb=on_reply)
    await asyncio.sleep(max(0.0, start.value - time.time()))
    late = time.time() - start.value
    t_start = time.monotonic()
    seq = 1000000001
    second = 0
    while second < seconds:
        seq += 1
        worst.append(0.0)
        stamp = f'"seq":{seq}'.encode()
        t_second = t_start + second
        k = 0
        while k < len(beats):
            # What is due by now, as independent spokes spread over the second would send.
            due = min(len(beats), int((time.monotonic() - t_second) * len(beats)) + 1)
            for subject, data in beats[k:due]:
                reply = f"{inbox}.{n}"
                sent_at[n] = (time.monotonic(), second)
                n += 1
                await nc.publish(subject, data.replace(SEQ, stamp), reply=reply)
            k = max(k, due)
            await asyncio.sleep(TICK)
        second += 1
        rest = t_start + second - time.monotonic()
        if rest > 0:
            await asyncio.sleep(rest)
    took = time.monotonic() - t_start
    if sent_at:
        sending = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), REPLY_TIMEOUT)
    await nc.close()
    return {"sent": n, "took": took, "latencies": latencies, "worst": worst, "late": late}


def _sender(
    nats_url: str, first: int, count: int, seconds: float, ready: Any, go: Any, start: Any,
    out: Any,
) -> None:  # fmt: skip
    out.put(asyncio.run(spokes(nats_url, first, count, seconds, ready, go, start)))


def test_a_thousand_spokes_at_one_hertz(tmp_path: Path) -> None:
    with Federation(tmp_path / "fed", spokes=[], timings=Timings(), insecure=True) as fed:
        assert fed.api_url is not None and fed.hub is not None and fed.nats is not None
        url, token = fed.api_url, fed.admin_token
        submit = request("POST", url, "/v1/jobs", token, body(manifest("bench")))
        warm = asyncio.run(hammer(url, submit, seconds=1.0, expect=201))
        alone = asyncio.run(hammer(url, submit, seconds=5.0, expect=201))

        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        go, start_at = ctx.Event(), ctx.Value("d", 0.0)
        readies = [ctx.Event() for _ in range(SENDERS)]
        share = -(-SPOKES // SENDERS)
        senders = []
        for i in range(SENDERS):
            part = (i * share, min(share, SPOKES - i * share))
            args = (fed.nats.url, *part, SECONDS, readies[i], go, start_at, out)
            senders.append(ctx.Process(target=_sender, args=args))
        for p in senders:
            p.start()
        try:
            for r in readies:  # every sender connected and its heartbeats encoded
                assert r.wait(120), "a sender never got ready"
            start = time.time() + 0.5
            start_at.value = start
            go.set()
            # Every spoke has joined and is steady by half time; the last seconds before
            # it, heartbeats alone: what hearing from 1,000 spokes costs the hub, and the
            # rest of this machine (the senders, nats-server).
            time.sleep(max(0.0, start - time.time()) + SECONDS / 2 - QUIET_S)
            procs = {"hub": fed.hub.pid, "nats": nats_pid(fed)}
            procs.update({f"sender{i}": p.pid for i, p in enumerate(senders) if p.pid})
            hb0, t_hb = {k: cpu_seconds(v) for k, v in procs.items() if v}, time.monotonic()
            time.sleep(QUIET_S)
            took_hb = time.monotonic() - t_hb
            hb_cpu = {k: (cpu_seconds(procs[k]) - v) / took_hb for k, v in hb0.items()}
            cpu0, t0 = cpu_seconds(fed.hub.pid), time.monotonic()
            load = asyncio.run(hammer(url, submit, seconds=5.0, expect=201))
            cpu = (cpu_seconds(fed.hub.pid) - cpu0) / (time.monotonic() - t0)
            results = [out.get(timeout=SECONDS + REPLY_TIMEOUT + 60) for _ in senders]
            # The same clusters, still Ready (silent for less than the failover timeout),
            # but no heartbeats: what a thousand clusters cost submissions by themselves.
            quiet = asyncio.run(hammer(url, submit, seconds=5.0, expect=201))
        finally:
            for p in senders:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
    sent = sum(r["sent"] for r in results)
    took = max(r["took"] for r in results)
    latencies = [lat for r in results for lat in r["latencies"]]
    worst = [max(w) for w in zip(*(r["worst"] for r in results), strict=False)]
    half = len(worst) // 2
    figures = {
        "spokes": SPOKES,
        "nodes_per_spoke": NODES,
        "seconds": SECONDS,
        "senders": SENDERS,
        "sent_per_s": round(sent / took, 1),
        "answered_per_s": round(len(latencies) / took, 1),
        "answered_share": round(len(latencies) / sent, 3) if sent else 0.0,
        "reply_p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else 0.0,
        "reply_p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else 0.0,
        "worst_second_first_half_ms": round(max(worst[:half], default=0) * 1000, 1),
        "worst_second_second_half_ms": round(max(worst[half:], default=0) * 1000, 1),
        "senders_started_late_ms": round(max(r["late"] for r in results) * 1000, 1),
        "hub_cpu_share_heartbeats_only": round(hb_cpu["hub"], 2),
        "senders_cpu_share": round(sum(v for k, v in hb_cpu.items() if k.startswith("sender")), 2),
        "nats_server_cpu_share": round(hb_cpu.get("nats", 0.0), 2),
        "hub_cpu_share_during_submissions": round(cpu, 2),
        "submissions_alone_per_s": round(alone.rate),
        "submissions_with_heartbeats_per_s": round(load.rate),
        "submissions_ratio": round(load.rate / alone.rate, 2) if alone.rate else 0.0,
        "submissions_with_heartbeats_over_target": round(load.rate / SUBMIT_TARGET_PER_S, 2),
        "within_20pct_of_target": load.rate >= 0.8 * SUBMIT_TARGET_PER_S,
        "submissions_clusters_silent_per_s": round(quiet.rate),
        "submissions_ratio_to_silent": round(load.rate / quiet.rate, 2) if quiet.rate else 0.0,
        # The jobs wait (no such GPU type), so each phase starts with a deeper queue: a
        # pass costs more with more jobs waiting, whatever the heartbeats do.
        "waiting_at_start_alone_heartbeats_silent": [
            warm.answers,
            warm.answers + alone.answers,
            warm.answers + alone.answers + load.answers,
        ],
        "load_average": round(os.getloadavg()[0], 2),
    }
    record("intake", figures)
    assert figures["answered_share"] > 0.5  # sanity: the figures are the result
