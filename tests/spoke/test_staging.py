"""Staging datasets into a cluster's cache from a real S3 object store (SeaweedFS): the
copy, one copy for many slices, progress, least-recently-used eviction that never touches
a dataset in use, failures reported, and the cache read back after a restart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from orrery.wire import DataMount, DatasetState, SliceKey
from orrery_spoke_agent.staging import Stager, StagingError
from tests.objectstore import SeaweedFS, bucket, upload

pytestmark = pytest.mark.usefixtures("s3_credentials")

TASKS: set[asyncio.Task[None]] = set()


def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    t = asyncio.get_running_loop().create_task(coro)
    TASKS.add(t)
    t.add_done_callback(TASKS.discard)
    return t


def dataset(server: SeaweedFS, name: str, shards: int, size: int) -> DataMount:
    """``shards`` objects of ``size`` bytes under a fresh prefix."""
    b = "ds-" + uuid.uuid4().hex[:8]
    bucket(server, b)
    upload(server, b, {f"{name}/shard-{i:04d}": bytes([i % 256]) * size for i in range(shards)})
    return DataMount(
        name=name,
        version="1",
        uri=f"s3://{b}/{name}",
        endpoint=server.endpoint,
        region="us-east-1",
        size_bytes=shards * size,
        mount_path=f"/data/{name}",
    )


def user(i: int) -> SliceKey:
    return SliceKey(job="job-1", index=i, epoch=1)


async def test_a_dataset_is_copied_once_for_all_the_slices_that_read_it(
    tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    m = dataset(seaweedfs, "c4", shards=6, size=100_000)
    st = Stager(tmp_path / "cache", spawn=spawn)
    st.load()
    paths = await asyncio.gather(*(st.acquire(user(i), [m]) for i in range(3)))
    where = paths[0]["c4"]
    assert all(p["c4"] == where for p in paths)
    files = sorted(where.iterdir())
    assert [f.name for f in files] == [f"shard-{i:04d}" for i in range(6)]
    assert files[5].read_bytes() == bytes([5]) * 100_000
    (report,) = st.report()
    assert report.state is DatasetState.READY and report.in_use == 3
    # Counted once: three slices waited on one copy.
    assert report.bytes_done == report.size_bytes == 600_000
    for i in range(3):
        await st.release(user(i))
    assert st.report()[0].in_use == 0

    again = Stager(tmp_path / "cache", spawn=spawn)
    again.load()
    (back,) = again.report()
    assert back.state is DatasetState.READY and back.size_bytes == 600_000


async def test_progress_is_reported_while_the_copy_runs(
    tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    m = dataset(seaweedfs, "big", shards=16, size=1_000_000)
    st = Stager(tmp_path / "cache", spawn=spawn)
    st.load()
    task = asyncio.create_task(st.acquire(user(0), [m]))
    seen = []
    while not task.done():
        seen += [r for r in st.report() if r.state is DatasetState.STAGING]
        await asyncio.sleep(0.005)
    await task
    assert seen, "no report while staging"
    assert all(r.size_bytes == 16_000_000 and r.bytes_done <= r.size_bytes for r in seen)
    assert st.report()[0].state is DatasetState.READY


async def test_over_its_limit_the_cache_evicts_the_least_recently_used_unused_dataset(
    tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    a = dataset(seaweedfs, "a", shards=2, size=100_000)
    b = dataset(seaweedfs, "b", shards=2, size=100_000)
    c = dataset(seaweedfs, "c", shards=2, size=100_000)
    clock = iter(range(1000))
    st = Stager(tmp_path / "cache", limit_bytes=450_000, spawn=spawn, clock=lambda: next(clock))
    st.load()
    await st.acquire(user(0), [a])  # in use throughout
    await st.acquire(user(1), [b])
    await st.release(user(1))  # b unused from now on, and the least recently used
    await st.acquire(user(2), [c])
    held = {r.name for r in st.report()}
    assert held == {"a", "c"}
    assert not (tmp_path / "cache" / "b").joinpath("1").exists()
    assert (tmp_path / "cache" / "a" / "1" / "shard-0001").exists()

    # a and c both in use: b cannot come back without pulling one from under a slice.
    with pytest.raises(StagingError, match="cache full"):
        await st.acquire(user(3), [b])
    assert {r.name for r in st.report()} == {"a", "c"}
    assert st.report()[0].in_use == 1


async def test_a_dataset_that_cannot_be_copied_fails_with_its_reason(
    tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    m = dataset(seaweedfs, "x", shards=1, size=10)
    missing = m.model_copy(update={"uri": m.uri + "-missing", "name": "gone"})
    st = Stager(tmp_path / "cache", spawn=spawn)
    st.load()
    with pytest.raises(StagingError, match="no objects under"):
        await st.acquire(user(0), [missing])
    (r,) = st.report()
    assert r.state is DatasetState.FAILED and r.reason and "no objects" in r.reason
    assert r.in_use == 0
