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

from dataclasses import dataclass

from orrery.ids import ClusterName, NodeName
from orrery_hub.scheduler.fit import ClusterFit, TypeKey

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
