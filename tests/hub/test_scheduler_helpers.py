"""Readable builders for scheduler tests: "32 one-GPU jobs for queue A", "a cluster of two
8-GPU nodes", "a low-priority job holding 6 GPUs on node n0 until t=100"."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

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

_seq = itertools.count(1)


def job(
    name: str,
    *,
    queue: str = "default",
    gpus: int = 1,
    slices: int = 1,
    priority: int = 0,
    max_runtime: float | None = None,
    team: str | None = None,
    gpu_type: str | None = None,
    gang: bool = True,
) -> JobRequest:
    return JobRequest(
        id=JobId(name), name=name, priority=priority, seq=next(_seq), gpus_per_slice=gpus,
        gpu_types=None if gpu_type is None else frozenset([gpu_type]),
        pending=tuple(SliceIndex(i) for i in range(slices)), gang=gang, queue=queue,
        labels={"team": team} if team else {}, max_runtime=max_runtime,
    )


def jobs(count: int, *, queue: str = "default", prefix: str | None = None,
         **kw: object) -> list[JobRequest]:
    """``count`` jobs for ``queue``, submitted in order: jobs(32, queue="A")."""
    p = prefix or queue
    return [job(f"{p}-{i}", queue=queue, **kw) for i in range(count)]  # type: ignore[arg-type]


def running(
    name: str,
    *,
    on: Sequence[tuple[str, str, int]],  # (cluster, node, GPUs) per slice
    queue: str = "default",
    priority: int = 0,
    started: float = 0.0,
    checkpoint: float | None = None,
    max_runtime: float | None = None,
    stopping: bool = False,
    preempted_for: str | None = None,
) -> RunningJob:
    """A running job; GPU indices are handed out by ``fleet`` so they never collide."""
    return RunningJob(
        id=JobId(name), queue=queue, priority=priority,
        slices=tuple(
            RunningSlice(SliceIndex(i), ClusterName(c), NodeName(n), tuple(range(g)))
            for i, (c, n, g) in enumerate(on)
        ),
        started_at=started, last_checkpoint_at=checkpoint, max_runtime=max_runtime,
        stopping=stopping, preempted_for=None if preempted_for is None else JobId(preempted_for),
    )


def fleet(
    shape: dict[str, list[int]],
    busy: Iterable[RunningJob] = (),
    gpu_type: str = "H100",
) -> tuple[tuple[ClusterCapacity, ...], tuple[RunningJob, ...]]:
    """Clusters from {"c1": [8, 8]} (GPUs per node, nodes named n0, n1, ...), with the GPUs of
    ``busy`` taken. Returns the clusters and the running jobs with real GPU indices."""
    taken: dict[tuple[str, str], int] = Counter()
    fixed: list[RunningJob] = []
    for r in busy:
        slices = []
        for s in r.slices:
            k = (s.cluster, s.node)
            first = taken[k]
            taken[k] += len(s.gpus)
            slices.append(RunningSlice(s.index, s.cluster, s.node,
                                       tuple(range(first, first + len(s.gpus)))))
        fixed.append(RunningJob(
            id=r.id, queue=r.queue, priority=r.priority, slices=tuple(slices),
            started_at=r.started_at, last_checkpoint_at=r.last_checkpoint_at,
            max_runtime=r.max_runtime, labels=r.labels, stopping=r.stopping,
            preempted_for=r.preempted_for,
        ))
    clusters = []
    for cname, nodes in shape.items():
        caps = []
        for i, g in enumerate(nodes):
            used = taken[(cname, f"n{i}")]
            assert used <= g, f"{cname}/n{i} overbooked"
            caps.append(NodeCapacity(NodeName(f"n{i}"), gpu_type, g, tuple(range(used, g))))
        clusters.append(ClusterCapacity(ClusterName(cname), {}, True, tuple(caps)))
    return tuple(clusters), tuple(fixed)


def run(
    shape: dict[str, list[int]],
    waiting: Iterable[JobRequest],
    *,
    busy: Iterable[RunningJob] = (),
    queues: Iterable[QueueConfig] = (),
    policy: Policy | None = None,
    now: float = 0.0,
) -> Plan:
    clusters, run_ = fleet(shape, busy)
    snap = Snapshot(clusters=clusters, jobs=tuple(waiting), running=run_,
                    queues=tuple(queues), policy=policy or Policy())
    return plan(snap, now)


def gpus_by_queue(p: Plan, js: Iterable[JobRequest]) -> dict[str, int]:
    q = {j.id: j.queue for j in js}
    out: dict[str, int] = defaultdict(int)
    for pl in p.placements:
        out[q[pl.job]] += len(pl.gpus)
    return dict(out)


def placed(p: Plan) -> set[str]:
    return {str(pl.job) for pl in p.placements}


def victims(p: Plan) -> set[str]:
    return {str(x.victim) for x in p.preemptions}


# The helpers' own checks: the tables in the other files rely on them.


def test_fleet_hands_running_jobs_distinct_gpus() -> None:
    clusters, busy = fleet({"c1": [8]}, [running("a", on=[("c1", "n0", 3)]),
                                         running("b", on=[("c1", "n0", 2)])])
    assert busy[0].slices[0].gpus == (0, 1, 2)
    assert busy[1].slices[0].gpus == (3, 4)
    assert clusters[0].nodes[0].free == (5, 6, 7)


def test_jobs_are_submitted_in_order() -> None:
    a = jobs(3, queue="A")
    assert [j.name for j in a] == ["A-0", "A-1", "A-2"]
    assert a[0].seq < a[1].seq < a[2].seq
