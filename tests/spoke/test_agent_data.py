"""The agent with datasets: a slice that reads one starts only once its data is in the
cluster's cache (real SeaweedFS), with ORRERY_DATA_<NAME> pointing at it; the heartbeat
reports the cache; a kill while the data stages ends the attempt without launching it."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from orrery.natsserver import NatsServer
from orrery.wire import DatasetState, Kill, Prefetch, SlicePhase
from tests.objectstore import SeaweedFS
from tests.spoke.test_agent import assign, setup
from tests.spoke.test_staging import dataset

pytestmark = pytest.mark.usefixtures("s3_credentials")


async def test_a_slice_starts_with_its_dataset_staged_and_in_its_environment(
    nats_server: NatsServer, tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    m = dataset(seaweedfs, "c4-en", shards=4, size=50_000)
    async with setup(nats_server, tmp_path) as (hub, agent, ex):
        a = assign().model_copy(update={"datasets": [m], "env": {"ORRERY_DATA_SHARDS": "0:4"}})
        await hub.order(a)
        await hub.until(lambda: len(ex.launched) == 1, "launched after staging")
        env = ex.env[("j", 0, 1)]
        where = Path(env["ORRERY_DATA_C4_EN"])
        names = await asyncio.to_thread(lambda: sorted(p.name for p in where.iterdir()))
        assert names == [f"shard-{i:04d}" for i in range(4)]
        assert env["ORRERY_DATA_SHARDS"] == "0:4"

        def cached() -> list[tuple[str, DatasetState, int]]:
            return [(d.name, d.state, d.in_use) for d in hub.heartbeats[-1].datasets or []]

        await hub.until(lambda: cached() == [("c4-en", DatasetState.READY, 1)], "cache report")
        ex.finish(a.key, 0)
        await hub.until(lambda: cached() == [("c4-en", DatasetState.READY, 0)], "released")


async def test_a_prefetch_stages_the_data_before_any_slice_is_assigned(
    nats_server: NatsServer, tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    m = dataset(seaweedfs, "ahead", shards=3, size=10_000)
    async with setup(nats_server, tmp_path) as (hub, agent, ex):
        await hub.order(Prefetch(sender="hub", seq=3, job="j", datasets=[m]))

        def cached() -> list[tuple[str, DatasetState, int]]:
            return [(d.name, d.state, d.in_use) for d in hub.heartbeats[-1].datasets or []]

        await hub.until(lambda: cached() == [("ahead", DatasetState.READY, 0)], "prefetched")
        assert ex.launched == []
        # The assignment then finds it there: no second copy.
        await hub.order(assign().model_copy(update={"datasets": [m]}))
        await hub.until(lambda: len(ex.launched) == 1, "launched")
        assert [d.bytes_done for d in hub.heartbeats[-1].datasets or []] == [30_000]


async def test_a_kill_while_the_data_stages_ends_the_attempt_unlaunched(
    nats_server: NatsServer, tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    m = dataset(seaweedfs, "slow", shards=1, size=10)
    # A kill must win over a copy that is still waiting: point the order at an endpoint
    # that accepts connections and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    m = m.model_copy(update={"endpoint": f"http://127.0.0.1:{silent.getsockname()[1]}"})
    async with setup(nats_server, tmp_path) as (hub, agent, ex):
        await hub.order(assign().model_copy(update={"datasets": [m]}))
        await hub.until(lambda: ("j", 0, 1) in hub.last_slices(), "reported Starting")
        assert hub.last_slices()[("j", 0, 1)] == SlicePhase.STARTING
        await hub.order(Kill(sender="hub", seq=2, job="j", index=0, epoch=1, reason="cancel"))
        await hub.until(lambda: hub.last_slices().get(("j", 0, 1)) == SlicePhase.KILLED, "Killed")
        assert ex.launched == []
    silent.close()
