"""Scheduling pass at fleet scale: 100 clusters x 100 nodes x 8 GPUs, 100,000 pending jobs.

Figures printed (one core, this machine): a full pass; an incremental pass after 10 changes
(ten running jobs end; the other clusters keep their capacity objects, as the simulator
does, and, separately, with every capacity object rebuilt, as the hub's inventory does
today), with the waiting order kept between passes (``scheduler.waitlist``) and, for
comparison, sorted again by the pass; and the memory the snapshot takes. For the
first-release order (priority then submission) and for every stage on (fair share,
quotas, preemption, backfill).

    .venv/bin/python -m pytest -m benchmark benchmarks/bench_scheduler.py -s
"""

from __future__ import annotations

import gc
import os
import random
import time
import tracemalloc
from dataclasses import replace

import pytest

from benchmarks.conftest import record
from orrery.ids import ClusterName, JobId, NodeName, SliceIndex
from orrery_hub.scheduler import (
    ClusterCapacity,
    JobRequest,
    NodeCapacity,
    Plan,
    Policy,
    QueueConfig,
    RunningJob,
    RunningSlice,
    Snapshot,
    plan,
)
from orrery_hub.scheduler.waitlist import WaitList

CLUSTERS, NODES, GPUS, JOBS = 100, 100, 8, 100_000
QUEUES = (
    QueueConfig("A", weight=2, guaranteed=24_000, cohort="all"),
    QueueConfig("B", weight=1, guaranteed=24_000, cohort="all"),
    QueueConfig("C", weight=1, guaranteed=16_000, cohort="all"),
    QueueConfig("D", weight=1, guaranteed=16_000, cohort="all"),
)
NOW = 10_000.0


def build(seed: int = 1) -> Snapshot:
    """A fleet about a third busy (one running job per busy node) and 100k waiting jobs."""
    rng = random.Random(seed)
    clusters = []
    running = []
    for c in range(CLUSTERS):
        cname = ClusterName(f"c{c:03d}")
        nodes = []
        for n in range(NODES):
            nname = NodeName(f"n{n:03d}")
            busy = rng.choice((0, 0, 4, 8))
            if busy:
                running.append(RunningJob(
                    id=JobId(f"r{c}-{n}"), queue=rng.choice("ABCD"),
                    priority=rng.choice((0, 10)),
                    slices=(RunningSlice(SliceIndex(0), cname, nname, tuple(range(busy))),),
                    started_at=rng.uniform(0, NOW), last_checkpoint_at=None,
                    max_runtime=rng.uniform(NOW, 4 * NOW),
                ))
            nodes.append(NodeCapacity(nname, "H100", GPUS, tuple(range(busy, GPUS))))
        clusters.append(ClusterCapacity(cname, {"region": f"r{c % 5}"}, True, tuple(nodes)))
    jobs = tuple(
        JobRequest(
            id=JobId(f"j{i}"), name=f"j{i}", priority=rng.choice((0, 10, 100)), seq=i,
            gpus_per_slice=rng.choice((1, 1, 1, 2, 4, 8)), gpu_types=None,
            pending=tuple(SliceIndex(k) for k in range(rng.choice((1, 1, 1, 2, 4)))),
            gang=True, queue=rng.choice("ABCD"), max_runtime=rng.uniform(60, 8 * 3600),
        )
        for i in range(JOBS)
    )
    return Snapshot(tuple(clusters), jobs, tuple(running))


def after(
    snap: Snapshot, p: Plan, changes: int, rebuild_all: bool, kept: WaitList | None = None
) -> Snapshot:
    """The next pass's snapshot: the plan applied, then ``changes`` running jobs ended.
    ``kept``: the waiting jobs of ``snap`` in a ``WaitList``, told what was placed (once)."""
    taken: dict[tuple[str, str], set[int]] = {}
    placed: dict[str, list[RunningSlice]] = {}
    for pl in p.placements:
        taken.setdefault((pl.cluster, pl.node), set()).update(pl.gpus)
        placed.setdefault(pl.job, []).append(
            RunningSlice(pl.index, pl.cluster, pl.node, pl.gpus))
    ended = snap.running[:changes]
    for r in ended:
        for s in r.slices:
            taken.setdefault((s.cluster, s.node), set()).difference_update(s.gpus)
    freed = {(s.cluster, s.node): set(s.gpus) for r in ended for s in r.slices}
    touched = {c for c, _ in taken} | {c for c, _ in freed}
    clusters = []
    for c in snap.clusters:
        if c.name not in touched and not rebuild_all:
            clusters.append(c)  # unchanged: the very same object
            continue
        nodes = []
        for nd in c.nodes:
            key = (c.name, nd.name)
            free = (set(nd.free) - taken.get(key, set())) | freed.get(key, set())
            nodes.append(replace(nd, free=tuple(sorted(free))))
        clusters.append(replace(c, nodes=tuple(nodes)))
    by_id = {j.id: j for j in snap.jobs}
    new_running = [
        RunningJob(JobId(j), by_id[JobId(j)].queue, by_id[JobId(j)].priority, tuple(ss), NOW)
        for j, ss in placed.items()
    ]
    jobs = tuple(j for j in snap.jobs if j.id not in placed)
    order = None
    if kept is not None:
        for j in placed:
            kept.drop(JobId(j))
        order = kept.view()
    # Victims were ordered to stop: they hold their GPUs through the grace period.
    stopping = {x.victim: x.for_job for x in p.preemptions}
    still = tuple(
        replace(r, stopping=True, preempted_for=stopping[r.id]) if r.id in stopping else r
        for r in snap.running[changes:]
    )
    return Snapshot(
        tuple(clusters), jobs, still + tuple(new_running), snap.queues, snap.policy, order=order
    )


def timed(snap: Snapshot, now: float, repeat: int = 5) -> tuple[float, Plan]:
    best, out = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = plan(snap, now)
        best = min(best, time.perf_counter() - t0)
    assert out is not None
    return best, out


@pytest.mark.benchmark
@pytest.mark.parametrize(
    ("name", "policy"),
    [("priority (first release)", Policy()), ("orrery (all stages)", Policy.full())],
)
def test_pass_at_fleet_scale(name: str, policy: Policy) -> None:
    tracemalloc.start()
    base = build()
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    snap = replace(base, queues=QUEUES, policy=policy)
    full, p = timed(snap, NOW)
    assert p.placements
    kept = WaitList(policy, snap.runtime_history, snap.jobs)  # as the caller keeps it
    inc_snap = after(snap, p, 10, rebuild_all=False, kept=kept)
    inc, p2 = timed(inc_snap, NOW + 1)
    fresh_snap = replace(after(snap, p, 10, rebuild_all=True), order=inc_snap.order)
    fresh, _ = timed(fresh_snap, NOW + 1)
    resort, p3 = timed(replace(inc_snap, order=None), NOW + 1)
    assert p3 == p2  # the kept order changes nothing but the time
    gpus = CLUSTERS * NODES * GPUS
    print(
        f"\n[{name}] load average {os.getloadavg()[0]:.1f}; {gpus:,} GPUs,"
        f" {len(snap.jobs):,} pending, {len(snap.running):,} running:"
        f"\n  full pass            {full * 1000:8.1f} ms  ({len(p.placements):,} slices placed,"
        f" {len(p.preemptions)} preemptions, {len(p.reservations)} reservations)"
        f"\n  incremental (10 chg) {inc * 1000:8.1f} ms  ({len(p2.placements)} placed,"
        f" {len(inc_snap.jobs):,} pending)"
        f"\n  incremental, all capacity objects rebuilt {fresh * 1000:8.1f} ms"
        f"\n  incremental, waiting jobs sorted again by the pass {resort * 1000:8.1f} ms"
        f"\n  snapshot memory      {size / 2**20:8.1f} MiB"
    )


@pytest.mark.benchmark
def test_a_pass_over_a_queue_that_fits_nowhere() -> None:
    """100,000 waiting jobs of a GPU type no cluster has, GPUs free everywhere: what each
    pass costs while such a queue waits (the hub's batch and intake benchmarks build one),
    and the hub noting the reasons it gives (``apply.waits.WaitBook.note``). The pass
    tells the queue's one kind its reason as one group (``plan.WaitReasons``); the note is
    also timed, in the same run, on the same reasons as a dict with an entry per job
    (what a pass handed over before)."""
    from orrery_hub.apply.queued import Gathered
    from orrery_hub.apply.waits import WaitBook
    from orrery_hub.policy import Usage

    clusters = tuple(
        ClusterCapacity(
            name=ClusterName(f"c{c:03d}"), labels={}, ready=True,
            nodes=tuple(NodeCapacity(name=NodeName(f"n{n:03d}"), gpu_type="H100", gpus=GPUS,
                                     free=tuple(range(GPUS))) for n in range(NODES)),
        )
        for c in range(CLUSTERS)
    )  # fmt: skip
    jobs = tuple(
        JobRequest(id=JobId(f"sweep-{i:06x}"), name="sweep", priority=0, seq=i,
                   gpus_per_slice=1, gpu_types=frozenset({"NONE"}),
                   pending=(SliceIndex(0),), gang=True)
        for i in range(JOBS)
    )  # fmt: skip
    policy = Policy()
    snap = Snapshot(clusters, jobs, (), QUEUES, policy, order=WaitList(policy, None, jobs).view())
    g = Gathered(jobs, dict.fromkeys((j.id for j in jobs), 0), {}, {}, {}, Usage())
    grouped, flat = WaitBook(), WaitBook()
    first = plan(snap, NOW)
    grouped.note(first, g)
    flat.note(Plan((), dict(first.waiting)), g)
    passes, notes, flat_notes = [], [], []
    for _ in range(15):
        t0 = time.perf_counter()
        p = plan(snap, NOW)
        t1 = time.perf_counter()
        assert grouped.note(p, g) == {}  # the same reasons: nothing to write
        t2 = time.perf_counter()
        each = Plan((), dict(p.waiting))
        t3 = time.perf_counter()
        assert flat.note(each, g) == {}
        t4 = time.perf_counter()
        passes.append(t1 - t0)
        notes.append(t2 - t1)
        flat_notes.append(t4 - t3)
    assert len(p.waiting) == JOBS and not p.placements
    timed = (("pass", passes), ("note", notes), ("note_per_job_dict", flat_notes))
    ms = {k: round(sorted(v)[len(v) // 2] * 1000, 2) for k, v in timed}
    record("pass_queue_fits_nowhere", {
        "waiting": JOBS, "pass_ms": ms["pass"], "note_ms": ms["note"],
        "note_per_job_dict_ms": ms["note_per_job_dict"],
        "note_ratio": round(ms["note_per_job_dict"] / max(ms["note"], 1e-3), 1),
    })  # fmt: skip
