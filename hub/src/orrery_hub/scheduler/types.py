"""Which GPU type a job that accepts several should take (``Policy.type_aware``). Called
by ``cycle.plan`` once a pass; pure.

Tightest fit alone sends a flexible job to the smallest cluster or node, which is the
rarest type: on the Alibaba trace that put day-long any-type jobs on a 5% fleet's 14
P100s while 223 P100-only jobs arrived behind them and waited 30 hours at light load.
So a flexible job takes first the type the fewest single-type waiting jobs want per free
GPU, and among types nobody waits for, the most plentiful in the fleet; tightest fit
then chooses the node within that type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from orrery_hub.scheduler.fit import ClusterFit
from orrery_hub.scheduler.snapshot import JobRequest

_SINGLE: dict[str, frozenset[str]] = {}


def rank(
    fits: Iterable[ClusterFit],
    jobs: Iterable[JobRequest],
    wanted_by_type: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """GPU types in order of preference for flexible jobs (0 first); empty on a fleet of
    one type, where there is nothing to choose. ``wanted_by_type``: ``wanted(jobs)``
    when the caller keeps it (``waitlist.Ordered.single_type``), so ``jobs`` is not read."""
    total: dict[str, int] = {}
    free: dict[str, int] = {}
    for c in fits:
        if not c.ready:
            continue
        for t, by in c.buckets.items():
            if t is not None:
                total[t] = total.get(t, 0) + c.totals[t]
                free[t] = free.get(t, 0) + sum(k * len(ns) for k, ns in by.items())
    if len(total) < 2:
        return {}
    wanted = wanted_by_type if wanted_by_type is not None else single_type_gpus(jobs)
    ordered = sorted(total, key=lambda t: (wanted.get(t, 0) / max(1, free[t]), -total[t], t))
    return {t: i for i, t in enumerate(ordered)}


def single_type_gpus(jobs: Iterable[JobRequest]) -> dict[str, int]:
    """GPUs the jobs that accept one type only want, per type."""
    wanted: dict[str, int] = {}
    for j in jobs:
        if j.gpu_types is not None and len(j.gpu_types) == 1:
            (t,) = j.gpu_types
            wanted[t] = wanted.get(t, 0) + j.gpus
    return wanted


def preferred(job: JobRequest, ranks: Mapping[str, int]) -> list[frozenset[str]]:
    """The job's allowed types, each alone (as a ``TypeKey``), best first."""
    allowed = [t for t in ranks if job.gpu_types is None or t in job.gpu_types]
    return [single(t) for t in sorted(allowed, key=ranks.__getitem__)]


def single(t: str) -> frozenset[str]:
    """One interned frozenset per type, so ``ClusterFit``'s caches keyed by it hit."""
    got = _SINGLE.get(t)
    if got is None:
        got = _SINGLE[t] = frozenset((t,))
    return got
