"""A heartbeat is answered within a stated bound whatever the queue (issue 10).

With 100,000 pending jobs, heartbeat replies used to wait 48-57 s behind scheduling passes
on the one store thread, past every spoke's lease. Now a report is processed on its
cluster's lane and the reply waits for it at most ``Timing.ack_wait_s``. Here 20,000 jobs
that can never fit keep every pass busy; passes plan off the store thread now, so the store
is also held busy directly (slow transactions, as a stalled disk would), and a spoke's
heartbeats are timed meanwhile."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import httpx
import nats
import pytest
from sqlalchemy import insert, update
from sqlmodel import Session

from orrery.manifest import JobManifest
from orrery.wire import (
    Heartbeat,
    HeartbeatAck,
    NodeReport,
    SlicePhase,
    SliceReport,
    Subjects,
    decode,
    encode,
)
from orrery_hub.main import Hub
from orrery_hub.store.models import JobRow, SliceRow
from tests.conftest import ADMIN

PENDING = 20_000
# Stated bound: the ack wait (0.25 s) plus event-loop delay. The median must stay within
# BOUND_S and the 95th percentile within the lease, even on a shared, overloaded machine.
BOUND_S = 0.5


def _fill(s: Session, now: float) -> None:
    m = JobManifest.model_validate(
        {
            "apiVersion": "orrery/v1",
            "kind": "TrainingJob",
            "metadata": {"name": "wide"},
            # 4 x 8 GPUs, gang: more than the test's spoke has, so it waits forever.
            "spec": {"slices": 4, "gpusPerSlice": 8, "command": ["true"]},
        }
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    ids = [f"wide-{i:06x}" for i in range(PENDING)]
    s.execute(
        insert(JobRow),
        [
            {
                "id": j,
                "name": "wide",
                "queue": "default",
                "priority": 0,
                "labels": {},
                "manifest": m,
                "phase": "Pending",
                "created_at": now,
                "checkpoint_dir": f"/tmp/{j}",
            }
            for j in ids
        ],
    )
    s.execute(
        insert(SliceRow),
        [{"job_id": j, "index": i, "gpus": [], "updated_at": now} for j in ids for i in range(4)],
    )


async def test_heartbeats_are_answered_within_the_bound_while_long_passes_run(hub: Hub) -> None:
    assert hub.endpoints is not None
    t = hub.settings.timing
    assert t.ack_wait_s < BOUND_S < t.lease_s
    await hub.store.tx(lambda s: _fill(s, time.time()))
    name = f"busy-{uuid.uuid4().hex[:6]}"
    subjects = Subjects(name)
    nc = await nats.connect(hub.endpoints.nats_url)
    latencies: list[float] = []
    passes_before = hub.metrics.pass_seconds._sum.get()
    stop = asyncio.Event()

    async def stall_the_store() -> None:
        while not stop.is_set():
            await hub.store.tx(lambda s: time.sleep(0.4))

    staller = asyncio.create_task(stall_the_store())
    try:
        for seq in range(1, 41):
            free = list(range(8)) if seq % 2 else list(range(7))  # capacity changes: a pass
            hb = Heartbeat(
                sender=name,
                seq=seq,
                cluster=name,
                incarnation="inc",
                lease_s=t.lease_s,
                nodes=[NodeReport(name="n0", gpu_type="H100", gpus=8, free=free)],
                # A slice to settle: the heartbeat needs the store (an idle one does not).
                slices=[SliceReport(job="gone", index=0, epoch=1, phase=SlicePhase.SUCCEEDED)],
            )
            t0 = time.monotonic()
            reply = await nc.request(subjects.heartbeat, encode(hb), timeout=5)
            latencies.append(time.monotonic() - t0)
            assert decode(reply.data, HeartbeatAck).accepted
            await asyncio.sleep(0.1)
        busy = hub.metrics.pass_seconds._sum.get() - passes_before
        # What /v1/clusters shows (it reads the store too, behind the passes: not timed here).
        state = hub.inventory.clusters[name].state
    finally:
        stop.set()
        await staller
        await nc.close()
        # Unload the hub before it stops: its stop waits for the pass in flight only.
        await hub.store.tx(lambda s: s.execute(update(JobRow).values(phase="Cancelled")))
    worst = max(latencies)
    median = statistics.median(latencies)
    p95 = sorted(latencies)[int(0.95 * len(latencies)) - 1]
    # Replies that went out before their heartbeat was processed: the store was busy.
    hurried = sum(1 for x in latencies if x >= t.ack_wait_s)
    print(
        f"ack latency over {len(latencies)} heartbeats with {PENDING} pending jobs: "
        f"median {median * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {worst * 1000:.0f} ms; "
        f"{hurried} answered before processing; passes finished {busy:.1f}s"
    )
    # The test bites only if the store was busy: most replies could not wait for it.
    assert hurried >= len(latencies) // 2, f"only {hurried} replies were hurried: not loaded"
    assert median < BOUND_S, f"median reply {median:.2f}s"
    assert p95 < t.lease_s, f"95th percentile reply {p95:.2f}s, lease {t.lease_s}s"
    assert state == "Ready"


async def test_a_heartbeat_whose_processing_fails_is_still_answered_and_counted(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 10: a report the store refused (an epoch past int64) went unanswered, the
    # spoke's lease lapsed, and /v1/clusters showed it Ready all along. Now the answer does
    # not depend on processing: Ready in /v1/clusters means its heartbeats are answered.
    from orrery_hub import reconcile

    def broken(*_a: object, **_kw: object) -> reconcile.Outbox:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    monkeypatch.setattr(reconcile, "apply_reports", broken)
    assert hub.endpoints is not None
    name = f"odd-{uuid.uuid4().hex[:6]}"
    nc = await nats.connect(hub.endpoints.nats_url)
    try:
        for seq in (1, 2, 3):
            hb = Heartbeat(sender=name, seq=seq, cluster=name, incarnation="i", lease_s=1.0)
            reply = await nc.request(Subjects(name).heartbeat, encode(hb), timeout=2)
            assert decode(reply.data, HeartbeatAck).accepted
    finally:
        await nc.close()
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as api:
        clusters = (await api.get("/v1/clusters")).json()["items"]
    assert [c["state"] for c in clusters if c["name"] == name] == ["Ready"]
