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


@dataclass(frozen=True, slots=True)
class Entry:
    """A running job as a possible victim in one cluster: what it would cost and free."""

    job: RunningJob
    cost: float
    frees: Mapping[NodeName, int]  # GPUs it holds per node of this cluster


def table(
    on_cluster: Sequence[tuple[RunningJob, tuple[RunningSlice, ...]]],
    now: float,
    min_run_s: float = 0.0,
) -> list[Entry]:
    """One cluster's running jobs, cheapest eviction first; built once a pass (by
    ``cycle``) and walked by every search, which can then stop at the first fit.

    A job placed less than ``min_run_s`` ago is not a candidate: without this floor a job
    could be preempted again and again, each time by another arrival, and never progress."""
    out = []
    for r, slices in on_cluster:
        if r.stopping or not r.preemptible or now - r.started_at < min_run_s:
            continue
        frees: dict[NodeName, int] = {}
        for sl in slices:
            frees[sl.node] = frees.get(sl.node, 0) + len(sl.gpus)
        out.append(Entry(r, r.lost_gpu_seconds(now), frees))
    out.sort(key=lambda e: (e.cost, e.job.priority, -sum(e.frees.values()), e.job.id))
    return out


def _fits(free: Mapping[NodeName, int], g: int) -> int:
    return sum(c // g for c in free.values())


def _in_cluster(
    fit: ClusterFit,
    entries: Sequence[Entry],
    n: int,
    g: int,
    types: TypeKey,
    need_release: int,
    may_evict: MayEvict,
    releases: Releases,
    budget: Budget,
) -> tuple[float, tuple[Victim, ...], dict[NodeName, int]] | None:
    """(cost, victims, free GPUs per node after them) of the cheapest eviction here."""
    # A held node's free GPUs are spoken for (by an earlier preemptor or a reservation),
    # but what its other jobs would free is not: count those alone.
    work = fit.free_unheld(types)
    # The same count (held nodes add nothing either way), cached by the cluster, unless
    # held nodes are lent out just now.
    k = _fits(work, g) if fit._opened else fit.slices_fit(g, types)
    released = 0
    chosen: list[Victim] = []
    spent: dict[str, float] = {}
    for e in entries:  # cheapest first: stop at the first set that fits
        if k >= n and released >= need_release:
            break
        r = e.job
        frees = {node: c for node, c in e.frees.items() if node in work}
        rel = releases(r)
        if not frees and rel == 0:
            continue
        why = may_evict(r)
        if why is None:
            continue
        q = r.queue
        if spent.get(q, 0.0) + r.gpus > budget(q):
            continue
        spent[q] = spent.get(q, 0.0) + r.gpus
        chosen.append(Victim(r, why, e.cost, frees, rel))
        released += rel
        for node, c in frees.items():
            k += (work[node] + c) // g - work[node] // g
            work[node] += c
    if k < n or released < need_release or not chosen:
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
    return sum(v.cost for v in chosen), tuple(chosen), work


def choose(
    fits: Sequence[ClusterFit],
    tables: Callable[[ClusterName], Sequence[Entry]],
    n: int,
    g: int,
    types: TypeKey,
    need_release: int,
    may_evict: MayEvict,
    releases: Releases,
    budget: Budget,
) -> Eviction | None:
    """The cheapest eviction, in one cluster, after which ``n`` slices of ``g`` fit."""
    if g <= 0:
        return None
    best: tuple[float, int, ClusterName] | None = None
    found: tuple[tuple[Victim, ...], dict[NodeName, int]] | None = None
    for fit in fits:
        e = _in_cluster(fit, tables(fit.name), n, g, types, need_release, may_evict,
                        releases, budget)
        if e is None or not e[1]:
            continue
        rank = (e[0], len(e[1]), fit.name)
        if best is None or rank < best:
            best, found = rank, (e[1], e[2])
    if best is None or found is None:
        return None
    # Nodes for the winner only: sorting every cluster's free nodes, for each cluster
    # searched, was a tenth of a preempting pass.
    return Eviction(
        cluster=best[2], victims=found[0], nodes=tuple(pick_nodes(found[1], n, g)), cost=best[0]
    )
