"""Why a job waits, in words a user can act on. Called by ``cycle.plan``."""

from __future__ import annotations

from orrery.ids import ClusterName
from orrery_hub.scheduler.fit import ClusterFit
from orrery_hub.scheduler.plan import WaitReason
from orrery_hub.scheduler.snapshot import JobRequest


def types_text(types: frozenset[str] | None) -> str:
    if types is None:
        return "GPU"
    return "/".join(sorted(types))


def need_text(job: JobRequest, n: int) -> str:
    if job.gpus_per_slice == 0:
        return f"needs {n} CPU-only slice{'s' if n != 1 else ''}"
    return (
        f"needs {n} slice{'s' if n != 1 else ''} × {job.gpus_per_slice} "
        f"{types_text(job.gpu_types)}"
    )


def largest_node(c: ClusterFit, types: frozenset[str] | None) -> int:
    """GPUs of the biggest node of an allowed type (free or not): a slice needing more
    can never be placed in this cluster. Kept per cluster's node tuple (``fit._Index``)."""
    return c.largest_node(types)


def why(job: JobRequest, n: int, fits: list[ClusterFit]) -> WaitReason:
    per: dict[ClusterName, str] = {}
    best: tuple[int, str] | None = None
    types = job.gpu_types
    tt = types_text(types)
    never: int | None = None  # the largest node of the clusters where a slice never fits
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
        largest = largest_node(c, types)
        if job.gpus_per_slice > largest:
            # Not a matter of waiting: no node here will ever hold one slice.
            per[c.name] = f"can never fit: largest node has {largest} {tt}"
            never = max(never or 0, largest)
            continue
        k = c.slices_fit(job.gpus_per_slice, types)
        held = f", {len(c.held)} node(s) reserved" if c.held else ""
        per[c.name] = (
            f"{min(k, n)} of {n} slices fit "
            f"({c.free_gpus(types)} of {c.total_gpus(types)} {tt} free{held})"
        )
        if best is None or k > best[0]:
            best = (k, c.name)
    need = need_text(job, n)
    if best is None:
        if never is not None:
            return WaitReason(f"{need}; can never fit: largest node has {never} {tt}", per)
        if not any(c.ready for c in fits):
            return WaitReason(f"{need}; no Ready cluster", per)
        return WaitReason(f"{need}; no allowed Ready cluster has {tt} GPUs", per)
    if best[0] == 0:
        return WaitReason(f"{need}; no cluster has a slice's worth free", per)
    return WaitReason(f"{need}; largest fit: {best[1]} {best[0]} slice(s)", per)
