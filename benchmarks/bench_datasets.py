"""Datasets: staging throughput against a plain copy of the same bytes with the same tool
(obstore, from a real SeaweedFS on this machine), and the scheduling pass's cost with
1,000 datasets.

    .venv/bin/python -m pytest -m benchmark benchmarks/bench_datasets.py -s
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import obstore
import pytest
from tests.objectstore import ACCESS_KEY, SECRET_KEY, SeaweedFS, bucket, upload

from benchmarks.conftest import record
from orrery.ids import ClusterName, JobId, NodeName, SliceIndex
from orrery.wire import DataMount, SliceKey
from orrery_hub.scheduler import ClusterCapacity, JobRequest, NodeCapacity, Snapshot, plan
from orrery_hub.scheduler.data import DataPolicy, DatasetFacts, Link
from orrery_spoke_agent.staging import Stager
from orrery_spoke_agent.staging.copy import s3_store

OBJECTS, OBJECT_BYTES = 64, 4 * 2**20  # 256 MiB


@pytest.mark.benchmark
def test_staging_throughput_against_a_plain_copy(tmp_path: Path) -> None:
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = ACCESS_KEY, SECRET_KEY
    server = SeaweedFS(tmp_path / "weed").start()
    try:
        bucket(server, "bench")
        blob = os.urandom(OBJECT_BYTES)
        upload(server, "bench", {f"ds/part-{i:03d}": blob for i in range(OBJECTS)})
        total = OBJECTS * OBJECT_BYTES

        # A plain copy: list, then get each object and write it, one after the other.
        def plain(dest: Path) -> float:
            store = s3_store("bench", server.endpoint, "us-east-1")
            t0 = time.perf_counter()
            dest.mkdir(parents=True)
            for batch in obstore.list(store, prefix="ds"):
                for meta in batch:
                    key = str(meta["path"])
                    (dest / key.rsplit("/", 1)[1]).write_bytes(
                        bytes(obstore.get(store, key).bytes())
                    )
            return time.perf_counter() - t0

        async def staged(root: Path) -> float:
            tasks: set[asyncio.Task[None]] = set()

            def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
                t = asyncio.get_running_loop().create_task(coro)
                tasks.add(t)
                return t

            st = Stager(root, spawn=spawn)
            st.load()
            m = DataMount(
                name="ds",
                version="1",
                uri="s3://bench/ds",
                endpoint=server.endpoint,
                region="us-east-1",
                size_bytes=total,
                mount_path="/data/ds",
            )
            t0 = time.perf_counter()
            await st.acquire(SliceKey(job="b", index=0, epoch=1), [m])
            return time.perf_counter() - t0

        plain(tmp_path / "warm")  # the first read warms SeaweedFS's caches for both
        shutil.rmtree(tmp_path / "warm")
        runs = []
        for i in range(3):
            p = plain(tmp_path / f"plain-{i}")
            s = asyncio.run(staged(tmp_path / f"cache-{i}"))
            runs.append((p, s))
        p = min(r[0] for r in runs)
        s = min(r[1] for r in runs)
        mib = total / 2**20
        record(
            "datasets-staging",
            {
                "bytes": total,
                "objects": OBJECTS,
                "plain_copy_mib_s": round(mib / p, 1),
                "staging_mib_s": round(mib / s, 1),
                "staging_vs_plain": round(p / s, 2),
            },
        )
    finally:
        server.stop()


def fleet(n_clusters: int, nodes: int, rng: random.Random) -> tuple[ClusterCapacity, ...]:
    out = []
    for c in range(n_clusters):
        region = f"{['eu', 'us', 'ap'][c % 3]}-{c // 3}"
        out.append(
            ClusterCapacity(
                ClusterName(f"c{c}"),
                {"region": region},
                True,
                tuple(
                    NodeCapacity(
                        NodeName(f"c{c}-n{i}"), "H100", 8, tuple(range(rng.choice([0, 0, 4, 8])))
                    )
                    for i in range(nodes)
                ),
            )
        )
    return tuple(out)


@pytest.mark.benchmark
def test_pass_cost_with_a_thousand_datasets() -> None:
    rng = random.Random(7)
    clusters = fleet(30, 20, rng)
    names = [ClusterName(f"c{c}") for c in range(30)]
    datasets = {
        f"ds{i}": DatasetFacts(
            f"ds{i}",
            size_bytes=rng.randint(1, 4000) * 2**30,
            source_regions=(f"{['eu', 'us', 'ap'][i % 3]}-0",),
            cached_on=frozenset(rng.sample(names, 2)),
            allowed=frozenset(names[::3]) if i % 10 == 0 else None,  # a tenth resident
        )
        for i in range(1000)
    }
    data = DataPolicy(
        datasets=datasets,
        links=(Link("eu-*", "us-*", gbps=8, per_gb=0.09), Link("*", "ap-*", gbps=2, per_gb=0.12)),
    )
    jobs = tuple(
        JobRequest(
            id=JobId(f"j{i}"),
            name=f"j{i}",
            priority=0,
            seq=i,
            gpus_per_slice=rng.choice([1, 2, 4, 8]),
            gpu_types=None,
            pending=tuple(SliceIndex(k) for k in range(rng.choice([1, 2, 4]))),
            gang=True,
            datasets=tuple(f"ds{d}" for d in rng.sample(range(1000), rng.choice([1, 2]))),
        )
        for i in range(2000)
    )
    with_data = Snapshot(clusters=clusters, jobs=jobs, data=data)
    without = Snapshot(
        clusters=clusters,
        jobs=tuple(
            j.__class__(**{**{f: getattr(j, f) for f in j.__slots__}, "datasets": ()}) for j in jobs
        ),
    )  # type: ignore[attr-defined]

    def best(snap: Snapshot) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            plan(snap, now=0.0)
            times.append(time.perf_counter() - t0)
        return min(times)

    t_data, t_plain = best(with_data), best(without)
    record(
        "datasets-pass",
        {
            "clusters": 30,
            "nodes": 600,
            "datasets": 1000,
            "pending_jobs": 2000,
            "pass_s_with_data": round(t_data, 3),
            "pass_s_without_data": round(t_plain, 3),
            "data_stage_s": round(t_data - t_plain, 3),
        },
    )
