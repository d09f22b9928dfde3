"""Choosing victims: which running jobs to stop so that a waiting job fits. Called by
``cycle.plan`` when a job does not fit and the policy allows preemption.

A job may evict (the cycle decides which, see ``cycle._may_evict``): lower-priority jobs,
and, to reclaim its queue's guarantee, jobs of queues that borrow in its cohort. Per
cluster, victims are added cheapest first — cost being the GPU-seconds each would lose
since its last checkpoint — until the job's slices fit on the GPUs they free plus those
already free (and, for a reclaim, until the cohort is back within its guarantees). Then
victims that turned out unnecessary are dropped, most expensive first. The cluster with
the lowest total cost wins. If no set of allowed victims makes the job fit, nobody is
evicted: a job is never preempted for one that still would not fit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from orrery.ids import ClusterName, NodeName
from orrery_hub.scheduler.backfill import pick_nodes
from orrery_hub.scheduler.fit import ClusterFit, TypeKey
from orrery_hub.scheduler.snapshot import RunningJob, RunningSlice


@dataclass(frozen=True, slots=True)
class Victim:
    job: RunningJob
    reason: str
    cost: float
    frees: Mapping[NodeName, int]  # GPUs it frees per node, in the chosen cluster
    releases: int  # GPUs it gives back to the preemptor's cohort quota


@dataclass(frozen=True, slots=True)
class Eviction:
    cluster: ClusterName
    victims: tuple[Victim, ...]
    nodes: tuple[NodeName, ...]  # where the preemptor's slices will go
    cost: float


# Which running job may be evicted, and why: None means it may not be.
MayEvict = Callable[[RunningJob], str | None]
# GPUs an eviction gives back to the preemptor's cohort (0 when it does not matter).
Releases = Callable[[RunningJob], int]
# GPUs that may be taken from a queue in all (its borrowed GPUs when it is another queue
# under quota: evictions never push a queue below its guarantee, so reclaim and priority
# preemption cannot undo each other).
Budget = Callable[[str], float]


def _fits(free: Mapping[NodeName, int], g: int) -> int:
    return sum(c // g for c in free.values())


def _in_cluster(
    fit: ClusterFit,
    on_cluster: Sequence[tuple[RunningJob, tuple[RunningSlice, ...]]],
    n: int,
    g: int,
    types: TypeKey,
    need_release: int,
    may_evict: MayEvict,
    releases: Releases,
    budget: Budget,
    now: float,
) -> Eviction | None:
    allowed = set(fit._types(types))
    # A held node's free GPUs are spoken for (by an earlier preemptor or a reservation),
    # but what its other jobs would free is not: count those alone.
    free = {
        x.name: 0 if x.name in fit.held else len(x.free)
        for x in fit.by_name.values()
        if x.gpu_type is not None and x.gpu_type in allowed
    }
    candidates: list[Victim] = []
    for r, slices in on_cluster:
        if r.stopping or not r.preemptible:
            continue
        why = may_evict(r)
        if why is None:
            continue
        frees: dict[NodeName, int] = {}
        for s in slices:
            if s.node in free:
                frees[s.node] = frees.get(s.node, 0) + len(s.gpus)
        rel = releases(r)
        if not frees and rel == 0:
            continue
        candidates.append(Victim(r, why, r.lost_gpu_seconds(now), frees, rel))
    if not candidates:
        return None
    candidates.sort(key=lambda v: (v.cost, v.job.priority, -sum(v.frees.values()), v.job.id))

    work = dict(free)
    k = _fits(work, g)
    released = 0
    chosen: list[Victim] = []
    spent: dict[str, float] = {}
    for v in candidates:
        if k >= n and released >= need_release:
            break
        q = v.job.queue
        if spent.get(q, 0.0) + v.job.gpus > budget(q):
            continue
        spent[q] = spent.get(q, 0.0) + v.job.gpus
        chosen.append(v)
        released += v.releases
        for node, c in v.frees.items():
            k += (work[node] + c) // g - work[node] // g
            work[node] += c
    if k < n or released < need_release:
        return None
    # Drop victims the others make unnecessary, most expensive first.
    for v in sorted(chosen, key=lambda v: -v.cost):
        trial = dict(work)
        for node, c in v.frees.items():
            trial[node] -= c
        if _fits(trial, g) >= n and released - v.releases >= need_release:
            work = trial
            released -= v.releases
            chosen.remove(v)
    return Eviction(
        cluster=fit.name,
        victims=tuple(chosen),
        nodes=tuple(pick_nodes(work, n, g)),
        cost=sum(v.cost for v in chosen),
    )


def choose(
    fits: Sequence[ClusterFit],
    running_on: Mapping[ClusterName, Sequence[tuple[RunningJob, tuple[RunningSlice, ...]]]],
    n: int,
    g: int,
    types: TypeKey,
    need_release: int,
    may_evict: MayEvict,
    releases: Releases,
    budget: Budget,
    now: float,
) -> Eviction | None:
    """The cheapest eviction, in one cluster, after which ``n`` slices of ``g`` fit."""
    best: Eviction | None = None
    for fit in fits:
        if g <= 0:
            continue
        e = _in_cluster(
            fit, running_on.get(fit.name, ()), n, g, types, need_release,
            may_evict, releases, budget, now,
        )
        if e is None or not e.victims:
            continue
        if best is None or (e.cost, len(e.victims), e.cluster) < (
            best.cost, len(best.victims), best.cluster
        ):
            best = e
    return best
