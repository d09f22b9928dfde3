"""Reservations for a job that does not fit yet, and the backfill rule around them.
Called by ``cycle.plan``.

EASY backfill, per cluster: when the first job in order does not fit (typically a large
gang), find the earliest time its slices fit in one cluster — the "shadow time" — by
replaying the declared ends of what runs there (``started_at + max_runtime``; a stopping
victim ends within its grace). The nodes whose GPUs it will use at that time are held:
later jobs in the pass may use them only if they end (by their own declared maximum
runtime) no later than the shadow time, so a backfilled job never delays the reservation.
Jobs without a declared maximum runtime are never backfilled onto held nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from math import isfinite
from operator import add, attrgetter

from orrery.ids import ClusterName, NodeName
from orrery_hub.scheduler.fit import ClusterFit, TypeKey
from orrery_hub.scheduler.snapshot import RunningJob

# (time the GPUs come free, node, how many)
Release = tuple[float, NodeName, int]


@dataclass(frozen=True, slots=True)
class Shadow:
    cluster: ClusterName
    start_at: float
    nodes: tuple[NodeName, ...]


def _usable(fit: ClusterFit, types: TypeKey) -> dict[NodeName, int]:
    """Free GPUs now per node of an allowed type, leaving out nodes held for others."""
    allowed = set(fit._types(types))
    return {
        n.name: len(n.free)
        for n in fit.by_name.values()
        if n.gpu_type is not None and n.gpu_type in allowed and n.name not in fit.held
    }


def pick_nodes(free: dict[NodeName, int], n: int, g: int) -> list[NodeName]:
    """Nodes for ``n`` slices of ``g`` GPUs, fullest first: the fewest nodes, whole ones
    first (a multi-GPU slice should not be spread)."""
    out: list[NodeName] = []
    left = n
    for name, count in sorted(free.items(), key=lambda kv: (-kv[1], kv[0])):
        if left <= 0:
            break
        k = count // g
        if k:
            out.append(name)
            left -= k
    return out


def shadow(
    fit: ClusterFit,
    rel: list[Release],
    n: int,
    g: int,
    types: TypeKey,
    now: float,
) -> Shadow | None:
    """The earliest time ``n`` slices of ``g`` GPUs fit on ``fit``, and the nodes to hold."""
    if g <= 0:
        return None
    free = _usable(fit, types)
    k = sum(c // g for c in free.values())
    at = now
    if k < n:
        for end, node, cnt in rel:
            if end == float("inf"):
                return None
            c = free.get(node)
            if c is None:
                continue
            k += (c + cnt) // g - c // g
            free[node] = c + cnt
            if k >= n:
                at = end
                break
        else:
            return None
    return Shadow(fit.name, at, tuple(pick_nodes(free, n, g)))


class Releases:
    """When every running job frees its GPUs (``RunningJob.expected_end``: its declared
    end, never before ``now``; a stopping job's grace), and the jobs in that order; made
    once a pass, for the walks of ``earliest`` and ``until``. Made with C-level maps and
    one sort of indices: a loop making a row per slice of 29,000 running jobs was most of
    an incremental pass, and a walk reads only the few soonest."""

    __slots__ = ("ends", "order", "running")

    def __init__(self, running: Sequence[RunningJob], now: float, grace_s: float) -> None:
        limits = [INF if m is None else m for m in map(_MAX_RUNTIME, running)]
        ends = [e if e > now else now for e in map(add, map(_STARTED, running), limits)]
        stop = now + grace_s
        for i in compress(range(len(ends)), map(_STOPPING, running)):
            ends[i] = stop
        self.running = running
        self.ends = ends
        # Jobs that never end are never walked past (``earliest`` stops at infinity), so
        # only the others are sorted (24,000 of the benchmark's 29,000 declare no runtime).
        self.order = sorted(compress(range(len(ends)), map(isfinite, ends)),
                            key=ends.__getitem__)

    def until(self, cluster: ClusterName, at: float) -> list[Release]:
        """``cluster``'s releases by ``at``, sorted (by time, then node): the part of its
        releases ``shadow`` walks when it fits there at ``at``."""
        ends, running = self.ends, self.running
        out: list[Release] = []
        for i in self.order:
            end = ends[i]
            if end > at:
                break
            out.extend(
                [(end, s.node, len(s.gpus)) for s in running[i].slices
                 if s.cluster == cluster and s.gpus]
            )
        out.sort()
        return out


_MAX_RUNTIME = attrgetter("max_runtime")
_STARTED = attrgetter("started_at")
_STOPPING = attrgetter("stopping")


def earliest(
    fits: list[ClusterFit],
    rel: Releases,
    n: int,
    g: int,
    types: TypeKey,
    now: float,
) -> tuple[float, list[ClusterName]]:
    """The earliest ``shadow(...).start_at`` over ``fits`` and the clusters that have it
    (infinity and none when no cluster ever fits), from one walk over the fleet's
    releases in time order instead of one per cluster: a walk stops at the first time
    any cluster fits, and reads only the jobs that end before then. Jobs ending at the
    same time come in any order: the time a cluster first fits is the first time by
    which all it frees adds up to enough, whichever of them is counted first."""
    if g <= 0:
        return INF, []
    k: dict[ClusterName, int] = {}
    free: dict[ClusterName, dict[NodeName, int]] = {}
    by: dict[ClusterName, ClusterFit] = {}
    found: list[ClusterName] = []
    for f in fits:
        by[f.name] = f
        # Held nodes are out of the buckets: ``slices_fit`` counts what ``_usable`` does.
        k[f.name] = have = f.slices_fit(g, types)
        if have >= n:
            found.append(f.name)
    at = now if found else INF
    ends, running = rel.ends, rel.running
    for i in rel.order:
        end = ends[i]
        if end > at or end == INF:
            break
        for sl in running[i].slices:
            cluster, node, cnt = sl.cluster, sl.node, len(sl.gpus)
            got = k.get(cluster)
            if got is None or got >= n or not cnt:
                continue
            nodes = free.get(cluster)
            if nodes is None:
                nodes = free[cluster] = {}
            c = nodes.get(node)
            if c is None:
                f = by[cluster]
                nd = f.by_name.get(node)
                allowed = f._types(types)
                if nd is None or nd.gpu_type is None or nd.gpu_type not in allowed or (
                    node in f.held
                ):
                    c = nodes[node] = -1
                else:
                    c = nodes[node] = len(nd.free)
            if c < 0:
                continue
            have = got + (c + cnt) // g - c // g
            nodes[node] = c + cnt
            k[cluster] = have
            if have >= n:
                found.append(cluster)
                at = end
    return at, found


INF = float("inf")
