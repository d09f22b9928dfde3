"""The agent alone: real NATS, a scripted hub, the fake executor. Fencing by epoch, the
lease, bad messages, and the complete report."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
from nats.aio.msg import Msg

from orrery.natsserver import NatsServer
from orrery.wire import (
    Assignment,
    Heartbeat,
    HeartbeatAck,
    Kill,
    SliceKey,
    SlicePhase,
    SliceStatus,
    Subjects,
    decode,
    encode,
)
from orrery.wire.codec import decode_any
from orrery_spoke_agent.agent import Agent
from orrery_spoke_agent.executor.fake import FakeExecutor
from orrery_spoke_agent.inventory import Node
from orrery_spoke_agent.settings import SpokeSettings


class ScriptedHub:
    """Answers heartbeats (or not), records every report, publishes orders."""

    def __init__(self, nc: nats.NATS, cluster: str) -> None:
        self.nc = nc
        self.subjects = Subjects(cluster)
        self.heartbeats: list[Heartbeat] = []
        self.statuses: list[SliceStatus] = []
        self.answer = True
        self.forget: list[SliceKey] = []

    async def on_report(self, msg: Msg) -> None:
        m = decode_any(msg.data)
        if isinstance(m, Heartbeat):
            self.heartbeats.append(m)
            if self.answer:
                ack = HeartbeatAck(sender="hub", seq=1, forget=self.forget)
                await msg.respond(encode(ack))
        elif isinstance(m, SliceStatus):
            self.statuses.append(m)

    async def order(self, o: Assignment | Kill) -> None:
        await self.nc.publish(self.subjects.orders, encode(o))
        await self.nc.flush()

    # Generous: it only costs time when the test fails, and a loaded machine (CI, two cores
    # shared by many runs) can take several seconds for what takes 50 ms alone.
    async def until(self, pred: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    def last_slices(self) -> dict[tuple[str, int, int], SlicePhase]:
        hb = self.heartbeats[-1]
        return {(s.job, s.index, s.epoch): s.phase for s in hb.slices}


@contextlib.asynccontextmanager
async def setup(
    nats_server: NatsServer,
    tmp_path: Path,
    *,
    # Long unless a test is about the lease: a starved event loop (the scripted hub shares
    # it) must not lapse the lease and stop slices a test expects running.
    lease: float = 60.0,
    executor: FakeExecutor | None = None,
) -> AsyncIterator[tuple[ScriptedHub, Agent, FakeExecutor]]:
    cluster = f"c-{uuid.uuid4().hex[:6]}"
    nc = await nats.connect(nats_server.url)
    hub = ScriptedHub(nc, cluster)
    await nc.subscribe(f"orrery.v1.cluster.{cluster}.report.*", cb=hub.on_report)
    ex = executor or FakeExecutor()
    settings = SpokeSettings(
        nats_url=nats_server.url,
        cluster=cluster,
        state_dir=tmp_path,
        region="eu-west-1",
        heartbeat_interval_s=0.05,
        lease_s=lease,
        kill_grace_s=0.1,
        insecure=True,
    )
    agent = Agent(settings, ex, [Node("n0", "H100", 8, 81920)])
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.heartbeat_ok.wait(), 60)
        yield hub, agent, ex
    finally:
        agent.shutdown()
        await asyncio.wait_for(task, 60)
        await nc.close()


def assign(
    job: str = "j", index: int = 0, epoch: int = 1, gpus: list[int] | None = None
) -> Assignment:
    return Assignment(
        sender="hub",
        seq=1,
        job=job,
        job_name=job,
        index=index,
        epoch=epoch,
        world_size=1,
        node="n0",
        gpus=gpus if gpus is not None else [0, 1],
        master_addr="127.0.0.1",
        master_port=29500,
        command=["x"],
        checkpoint_dir="/ck",
    )


async def test_heartbeat_reports_capacity_and_labels(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with setup(nats_server, tmp_path) as (hub, agent, ex):
        hb = hub.heartbeats[-1]
        assert hb.labels == {"region": "eu-west-1"}
        assert [(n.name, n.gpu_type, n.gpus, n.free) for n in hb.nodes] == [
            ("n0", "H100", 8, list(range(8)))
        ]
        await hub.order(assign(gpus=[0, 1]))
        await hub.until(
            lambda: hub.heartbeats[-1].nodes[0].free == [2, 3, 4, 5, 6, 7], "GPUs 0,1 reported busy"
        )
        assert ex.lease_renewals > 0


async def test_assignments_are_idempotent_and_reported(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with setup(nats_server, tmp_path) as (hub, agent, ex):
        a = assign()
        await hub.order(a)
        await hub.order(a)  # a resend
        await hub.until(
            lambda: any(s.slice.phase == SlicePhase.RUNNING for s in hub.statuses),
            "a Running status",
        )
        assert len(ex.launched) == 1
        ex.finish(a.key, 0)
        await hub.until(
            lambda: hub.last_slices().get(("j", 0, 1)) == SlicePhase.SUCCEEDED,
            "Succeeded in the report",
        )
        # The ending stays in every report until the hub says it has recorded it.
        hub.forget = [a.key]
        await hub.until(lambda: ("j", 0, 1) not in hub.last_slices(), "forgotten")
        env = ex.env[("j", 0, 1)]
        assert env["ORRERY_EPOCH"] == "1" and env["RANK"] == "0"


async def test_a_kill_fences_older_epochs_forever(nats_server: NatsServer, tmp_path: Path) -> None:
    async with setup(nats_server, tmp_path) as (hub, agent, ex):
        await hub.order(Kill(sender="hub", seq=1, job="j", index=0, epoch=2, reason="moved"))
        await hub.until(
            lambda: hub.last_slices().get(("j", 0, 2)) == SlicePhase.KILLED,
            "a Killed tombstone report",
        )
        await hub.order(assign(epoch=2))  # arrives late: must never start
        await hub.order(assign(epoch=1))
        await hub.order(assign(epoch=3))
        await hub.until(lambda: len(ex.launched) == 1, "epoch 3 launched")
        assert [a.epoch for a in ex.launched] == [3]


async def test_a_newer_epoch_supersedes_the_running_one(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with setup(nats_server, tmp_path) as (hub, agent, ex):
        await hub.order(assign(epoch=1))
        await hub.until(lambda: len(ex.launched) == 1, "epoch 1 launched")
        await hub.order(assign(epoch=2, gpus=[2, 3]))
        await hub.until(lambda: len(ex.launched) == 2, "epoch 2 launched")
        assert ex.terminated[0][0] == ("j", 0, 1)
        await hub.until(
            lambda: hub.last_slices().get(("j", 0, 1)) == SlicePhase.KILLED,
            "epoch 1 reported Killed",
        )


async def test_busy_gpus_and_unknown_nodes_are_refused(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with setup(nats_server, tmp_path) as (hub, agent, ex):
        await hub.order(assign(job="a", gpus=[0, 1]))
        await hub.order(assign(job="b", gpus=[1, 2]))
        bad_node = assign(job="c").model_copy(update={"node": "nope"})
        await hub.order(bad_node)
        await hub.until(lambda: {("b", 0, 1), ("c", 0, 1)} <= set(hub.last_slices()), "refusals")
        by_job = {s.job: s for s in hub.heartbeats[-1].slices}
        assert by_job["b"].phase == SlicePhase.FAILED
        assert by_job["b"].reason == "gpus busy: n0 GPUs [1] are in use"
        assert by_job["c"].reason is not None and by_job["c"].reason.startswith("node lost")
        assert [a.job for a in ex.launched] == ["a"]


async def test_bad_orders_are_dropped_and_the_agent_carries_on(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with setup(nats_server, tmp_path) as (hub, agent, ex):
        for junk in (b"nonsense", b'{"kind": "assignment"}', b'{"kind": "kill", "v": 9}'):
            await hub.nc.publish(hub.subjects.orders, junk)
        await hub.order(assign())
        await hub.until(lambda: len(ex.launched) == 1, "the good order after the junk")


async def test_the_lease_lapses_when_the_hub_stops_answering(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with setup(nats_server, tmp_path, lease=0.5) as (hub, agent, ex):
        await hub.order(assign())
        await hub.until(lambda: len(ex.launched) == 1, "launched")
        hub.answer = False
        silent_since = time.time()
        await hub.until(lambda: bool(ex.terminated), "the lease-lapse stop", timeout=5)
        ((_, reason),) = ex.terminated
        assert reason.startswith("lease lapsed")
        # The lease runs from when the last answered heartbeat left, which on a loaded
        # machine may be well before the hub fell silent: measure from there.
        last = agent.last_ack
        assert last is not None and last <= silent_since
        assert time.time() - last >= 0.5
        # Cut off, it refuses new work; answered again, it runs what the hub resends.
        await hub.order(assign(job="later"))
        # Orders are handled in order: once the probe's tombstone is out, "later" was handled.
        await hub.order(Kill(sender="hub", seq=1, job="probe", index=0, epoch=1))
        await hub.until(lambda: any(s.slice.job == "probe" for s in hub.statuses), "the probe")
        assert [a.job for a in ex.launched] == ["j"]
        hub.answer = True
        await hub.until(lambda: not agent.lease_lapsed, "lease renewed")
        await hub.order(assign(job="later"))
        await hub.until(lambda: [a.job for a in ex.launched] == ["j", "later"], "relaunch")


async def test_decode_of_what_the_agent_sends_is_strict(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with setup(nats_server, tmp_path) as (hub, agent, ex):
        raw = encode(agent.heartbeat())
        assert decode(raw, Heartbeat).cluster == agent.settings.cluster
