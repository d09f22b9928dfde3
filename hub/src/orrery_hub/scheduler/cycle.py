"""One scheduling pass: ``plan(snapshot, now) -> Plan``. Pure: no IO, no clock, no database.

Steps, in order (Kueue writes its cycle the same way):

1. Copy each Ready cluster's free GPUs into a working structure (``fit.ClusterFit``).
2. Order the waiting jobs: higher priority first, then earlier submission.
3. For each job, find clusters it may use (Ready, allowed by policy, has its GPU type),
   and place it: on one cluster when one fits it all (the highest policy score, then
   the tightest fit), else across the fewest clusters, largest first. A gang job is placed
   all or nothing; a job of independent slices takes what fits.
4. A job that does not fit gets a reason. Capacity only shrinks during a pass, so once a
   job shape fails, larger requests of the same shape fail too: remembered, not retried.
"""

from __future__ import annotations

from collections.abc import Iterable

from orrery.ids import ClusterName, JobId, SliceIndex
from orrery_hub.scheduler.fit import ClusterFit
from orrery_hub.scheduler.plan import Plan, SlicePlacement, WaitReason
from orrery_hub.scheduler.snapshot import JobRequest, Snapshot

ShapeKey = tuple[int, frozenset[str] | None, frozenset[ClusterName] | None]


def _types_text(types: frozenset[str] | None) -> str:
    if types is None:
        return "GPU"
    return "/".join(sorted(types))


def _need_text(job: JobRequest, n: int) -> str:
    if job.gpus_per_slice == 0:
        return f"needs {n} CPU-only slice{'s' if n != 1 else ''}"
    return (
        f"needs {n} slice{'s' if n != 1 else ''} × {job.gpus_per_slice} "
        f"{_types_text(job.gpu_types)}"
    )


def order(jobs: Iterable[JobRequest]) -> list[JobRequest]:
    """Priority order, then submission order."""
    return sorted(jobs, key=lambda j: (-j.priority, j.seq))


def _eligible(job: JobRequest, fits: list[ClusterFit]) -> list[ClusterFit]:
    allowed = job.allowed_clusters
    return [
        c
        for c in fits
        if c.ready
        and (allowed is None or c.name in allowed)
        and (job.gpus_per_slice == 0 or c.has_type(job.gpu_types))
    ]


def _why(job: JobRequest, n: int, fits: list[ClusterFit]) -> WaitReason:
    per: dict[ClusterName, str] = {}
    best: tuple[int, str] | None = None
    types = job.gpu_types
    tt = _types_text(types)
    for c in fits:
        if not c.ready:
            per[c.name] = "cluster Lost"
            continue
        if job.allowed_clusters is not None and c.name not in job.allowed_clusters:
            per[c.name] = job.denied_reasons.get(c.name, "not allowed by policy")
            continue
        if job.gpus_per_slice and not c.has_type(types):
            per[c.name] = f"no {tt} GPUs"
            continue
        k = c.slices_fit(job.gpus_per_slice, types)
        per[c.name] = (
            f"{min(k, n)} of {n} slices fit "
            f"({c.free_gpus(types)} of {c.total_gpus(types)} {tt} free)"
        )
        if best is None or k > best[0]:
            best = (k, c.name)
    need = _need_text(job, n)
    if best is None:
        if not any(c.ready for c in fits):
            return WaitReason(f"{need}; no Ready cluster", per)
        return WaitReason(f"{need}; no allowed Ready cluster has {tt} GPUs", per)
    if best[0] == 0:
        return WaitReason(f"{need}; no cluster has a slice's worth free", per)
    return WaitReason(f"{need}; largest fit: {best[1]} {best[0]} slice(s)", per)


def _choose(
    job: JobRequest, n: int, candidates: list[tuple[ClusterFit, int]]
) -> list[tuple[ClusterFit, int]]:
    """Which clusters take how many slices. Returns [] when a gang cannot be placed."""
    scores = job.cluster_scores
    whole = [(c, k) for c, k in candidates if k >= n]
    if whole:
        # Policy preference first, then the tightest fit (leave big holes for big jobs).
        c, _ = min(whole, key=lambda ck: (-scores.get(ck[0].name, 0.0), ck[1], ck[0].name))
        return [(c, n)]
    ranked = sorted(
        candidates, key=lambda ck: (-ck[1], -scores.get(ck[0].name, 0.0), ck[0].name)
    )
    out: list[tuple[ClusterFit, int]] = []
    left = n
    for c, k in ranked:
        if left == 0:
            break
        take = min(k, left)
        out.append((c, take))
        left -= take
    if left and job.gang:
        return []
    return out


def plan(snapshot: Snapshot, now: float) -> Plan:
    """Place what fits, in priority order; say why the rest waits.

    ``now`` is part of the signature so that time-dependent policies (backfill windows,
    ageing) read it from here; this pass never reads a clock.
    """
    del now  # nothing in this pass depends on time yet
    fits = [ClusterFit(c) for c in sorted(snapshot.clusters, key=lambda c: c.name)]
    placements: list[SlicePlacement] = []
    waiting: dict[JobId, WaitReason] = {}
    no_fit: dict[ShapeKey, int] = {}  # shape -> smallest slice count known not to fit
    reasons: dict[tuple[ShapeKey, int], WaitReason] = {}

    for job in order(snapshot.jobs):
        n = len(job.pending)
        if n == 0:
            continue
        shape: ShapeKey = (job.gpus_per_slice, job.gpu_types, job.allowed_clusters)
        need = n if job.gang else 1
        if no_fit.get(shape, 1 << 30) <= need:
            key = (shape, n)
            if key not in reasons:
                reasons[key] = _why(job, n, fits)
            waiting[job.id] = reasons[key]
            continue
        candidates = [
            (c, k)
            for c in _eligible(job, fits)
            if (k := c.slices_fit(job.gpus_per_slice, job.gpu_types)) > 0
        ]
        chosen = _choose(job, n, candidates)
        if not chosen:
            no_fit[shape] = min(no_fit.get(shape, 1 << 30), need)
            waiting[job.id] = _why(job, n, fits)
            continue
        indices = iter(sorted(job.pending))
        placed = 0
        for cluster, k in chosen:
            for take in cluster.take(k, job.gpus_per_slice, job.gpu_types):
                placements.append(
                    SlicePlacement(
                        job=job.id,
                        index=SliceIndex(next(indices)),
                        cluster=cluster.name,
                        node=take.node,
                        gpus=take.gpus,
                    )
                )
                placed += 1
        if placed < n:  # independent slices: some placed, the rest wait
            no_fit[shape] = 1
            waiting[job.id] = _why(job, n - placed, fits)
    return Plan(placements=tuple(placements), waiting=waiting)
