"""The hub's reconcile paths, one at a time, against a scripted spoke over real NATS.

Each heartbeat here is built by hand, so each test states exactly what the spoke claims
and checks exactly what the hub orders in reply."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import nats
import pytest
from nats.aio.msg import Msg

from orrery.wire import (
    Assignment,
    Heartbeat,
    HeartbeatAck,
    Kill,
    NodeReport,
    SlicePhase,
    SliceReport,
    Subjects,
    decode,
    decode_order,
    encode,
)
from orrery_hub.service import Hub
from tests.conftest import ADMIN

JOB = """
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: rec}
spec: {slices: 1, gpusPerSlice: 4, restartPolicy: Slice, command: ["true"]}
"""


class Spoke:
    def __init__(self, nc: nats.NATS, api: httpx.AsyncClient) -> None:
        self.nc = nc
        self.api = api
        self.name = f"s-{uuid.uuid4().hex[:6]}"
        self.subjects = Subjects(self.name)
        self.incarnation = "inc-1"
        self.seq = 0
        self.orders: list[Assignment | Kill] = []
        self.nodes = [
            NodeReport(name="n0", gpu_type="H100", gpus=8, free=list(range(8))),
            NodeReport(name="n1", gpu_type="H100", gpus=8, free=list(range(8))),
        ]

    async def on_order(self, msg: Msg) -> None:
        self.orders.append(decode_order(msg.data))

    async def beat(
        self,
        slices: list[SliceReport] | None = None,
        *,
        lease: float = 1.0,
        nodes: list[NodeReport] | None = None,
    ) -> HeartbeatAck:
        self.seq += 1
        hb = Heartbeat(
            sender=self.name,
            seq=self.seq,
            cluster=self.name,
            incarnation=self.incarnation,
            lease_s=lease,
            nodes=self.nodes if nodes is None else nodes,
            slices=slices or [],
        )
        reply = await self.nc.request(self.subjects.heartbeat, encode(hb), timeout=5)
        return decode(reply.data, HeartbeatAck)

    async def until(self, pred: Callable[[], bool], what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.orders}"
            await asyncio.sleep(0.02)

    def assignments(self) -> list[Assignment]:
        return [o for o in self.orders if isinstance(o, Assignment)]

    def kills(self) -> list[Kill]:
        return [o for o in self.orders if isinstance(o, Kill)]

    async def job(self, job_id: str) -> dict:  # type: ignore[type-arg]
        r = await self.api.get(f"/v1/jobs/{job_id}")
        return r.json()  # type: ignore[no-any-return]

    async def submit(self, text: str = JOB) -> str:
        r = await self.api.post("/v1/jobs", content=text)
        assert r.status_code == 201, r.text
        return r.json()["id"]  # type: ignore[no-any-return]


def running(a: Assignment, phase: SlicePhase = SlicePhase.RUNNING, **kw: object) -> SliceReport:
    return SliceReport(
        job=a.job,
        index=a.index,
        epoch=a.epoch,
        phase=phase,
        node=a.node,
        gpus=a.gpus,
        started_at=time.time(),
        **kw,
    )  # type: ignore[arg-type]


@pytest.fixture
async def spoke(hub: Hub) -> AsyncIterator[Spoke]:
    assert hub.endpoints is not None
    nc = await nats.connect(hub.endpoints.nats_url)
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as api:
        s = Spoke(nc, api)
        await nc.subscribe(s.subjects.orders, cb=s.on_order)
        ack = await s.beat()
        assert ack.accepted
        yield s
    await nc.close()


async def test_placement_resend_running_success_and_forget(spoke: Spoke) -> None:
    job_id = await spoke.submit()
    await spoke.until(lambda: len(spoke.assignments()) == 1, "an assignment")
    a = spoke.assignments()[0]
    assert (a.job, a.index, a.epoch, len(a.gpus)) == (job_id, 0, 1, 4)
    assert a.node in ("n0", "n1")
    # The spoke never got it (its report lacks it): the hub sends it again.
    await spoke.beat()
    await spoke.until(lambda: len(spoke.assignments()) == 2, "the resend")
    assert spoke.assignments()[1] == a.model_copy(update={"seq": spoke.assignments()[1].seq})
    await spoke.beat([running(a)])
    assert (await spoke.job(job_id))["status"]["phase"] == "Running"
    ack = await spoke.beat([running(a, SlicePhase.SUCCEEDED, exit_code=0, finished_at=time.time())])
    assert [(k.job, k.index, k.epoch) for k in ack.forget] == [(job_id, 0, 1)]
    assert (await spoke.job(job_id))["status"]["phase"] == "Succeeded"


async def test_a_slice_the_hub_never_gave_is_ordered_killed(spoke: Spoke) -> None:
    ghost = SliceReport(
        job="ghost-000000", index=0, epoch=3, phase=SlicePhase.RUNNING, node="n0", gpus=[0]
    )
    await spoke.beat([ghost])
    await spoke.until(lambda: bool(spoke.kills()), "a kill order")
    k = spoke.kills()[0]
    assert (k.job, k.index, k.epoch) == ("ghost-000000", 0, 3)


async def test_a_slice_that_vanishes_in_a_new_incarnation_is_placed_again(spoke: Spoke) -> None:
    job_id = await spoke.submit()
    await spoke.until(lambda: len(spoke.assignments()) == 1, "an assignment")
    a = spoke.assignments()[0]
    await spoke.beat([running(a)])
    spoke.incarnation = "inc-2"  # the agent restarted and found nothing of its slice
    await spoke.beat([])
    await spoke.until(lambda: any(x.epoch == 2 for x in spoke.assignments()), "epoch 2")
    job = await spoke.job(job_id)
    assert job["status"]["slices"][0]["epoch"] == 2
    assert job["status"]["slices"][0]["attempts"] == 2
    attempts = (await spoke.api.get(f"/v1/jobs/{job_id}/attempts")).json()
    assert attempts[0]["phase"] == "Lost" and "vanished" in attempts[0]["reason"]


async def test_a_node_gone_past_the_failover_timeout_moves_its_slices(
    spoke: Spoke, hub: Hub
) -> None:
    job_id = await spoke.submit()
    await spoke.until(lambda: len(spoke.assignments()) == 1, "an assignment")
    a = spoke.assignments()[0]
    other = "n1" if a.node == "n0" else "n0"
    survivors = [n for n in spoke.nodes if n.name == other]
    await spoke.beat([running(a)])
    gone_at = time.monotonic()
    while not any(x.epoch == 2 for x in spoke.assignments()):
        assert time.monotonic() - gone_at < 10, "the slice did not move"
        await spoke.beat([running(a)], nodes=survivors)
        await asyncio.sleep(0.1)
    assert time.monotonic() - gone_at >= hub.settings.timing.failover_timeout_s - 0.2
    moved = next(x for x in spoke.assignments() if x.epoch == 2)
    assert moved.node == other
    assert any(k.epoch == 1 and k.reason == "node lost" for k in spoke.kills())
    assert (await spoke.job(job_id))["status"]["slices"][0]["node"] == other


async def test_a_spoke_with_an_unsafe_lease_is_refused(spoke: Spoke, hub: Hub) -> None:
    ack = await spoke.beat(lease=hub.settings.timing.failover_timeout_s)
    assert not ack.accepted
    assert ack.reason is not None and "shorter --lease" in ack.reason


async def test_junk_on_report_subjects_is_dropped(spoke: Spoke, hub: Hub) -> None:
    before = hub.metrics.bad_messages._value.get()
    for junk in (
        b"{",
        b'{"kind":"heartbeat"}',
        encode(spoke.assignments()[0]) if spoke.assignments() else b'{"kind":"kill"}',
    ):
        await spoke.nc.publish(spoke.subjects.status, junk)
    other = Subjects("someone-else")
    hb = Heartbeat(sender="x", seq=1, cluster=spoke.name, incarnation="i", lease_s=1, nodes=[])
    await spoke.nc.publish(other.heartbeat, encode(hb))  # subject and body disagree
    await spoke.until(lambda: hub.metrics.bad_messages._value.get() >= before + 4, "4 drops")
    assert (await spoke.beat()).accepted  # and the hub carries on
