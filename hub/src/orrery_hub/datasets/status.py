"""A job's data as its status shows it: for each dataset it reads, its state in the cache
of each cluster the job's slices are on (Staging with bytes, rate and time left; Ready;
Failed with the reason), and the options placement weighed for it. In memory: spokes
report their caches on every heartbeat, and each pass recomputes its notes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlmodel import Session

from orrery.resources import DataStaging, JobPublic
from orrery.wire import CachedDataset
from orrery_hub.scheduler import Plan
from orrery_hub.store.jobs import add_event


def enrich(
    job: JobPublic,
    caches: Mapping[str, Sequence[CachedDataset]],
    notes: Mapping[str, str],
) -> JobPublic:
    refs = job.spec.get("datasets") or []
    if not refs:
        return job
    names = {r.get("name") for r in refs if isinstance(r, dict)}
    clusters = sorted({sl.cluster for sl in job.status.slices if sl.cluster})
    data = [
        DataStaging(
            dataset=d.name,
            cluster=c,
            state=d.state.value,
            size_bytes=d.size_bytes,
            bytes_done=d.bytes_done,
            rate_bps=d.rate_bps,
            eta_s=d.eta_s,
            reason=d.reason,
        )
        for c in clusters
        for d in caches.get(c, ())
        if d.name in names
    ]
    status = job.status.model_copy(update={"data": data, "placement": notes.get(job.id)})
    return job.model_copy(update={"status": status})


MAX_NOTES = 10_000  # jobs whose last note is kept in memory; the oldest go first


def record_notes(s: Session, plan: Plan, notes: dict[str, str], *, now: float) -> None:
    """Keep each job's latest note (``orrery jobs ID`` shows it); a job placed this pass
    also gets it as a DataPlacement event, so why it went where it went outlives the hub."""
    placed = {p.job: p.cluster for p in plan.placements}
    for job_id, note in plan.data_notes.items():
        notes.pop(job_id, None)
        notes[job_id] = note
        if job_id in placed:
            add_event(
                s,
                at=now,
                kind="DataPlacement",
                message=f"placed on {placed[job_id]}; options: {note}"[:2000],
                job_id=job_id,
                cluster=placed[job_id],
            )
    while len(notes) > MAX_NOTES:
        notes.pop(next(iter(notes)))
