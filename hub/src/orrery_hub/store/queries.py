"""The store's reads, in one place: jobs and their views, events and attempts (paged),
the audit log (paged, newest first), and job counts by phase. Called on the store thread
(``store.runner``) by the runtime's API service and the metrics scrape."""

from __future__ import annotations

from sqlmodel import Session, col, func, select

from orrery.errors import NotFound
from orrery.resources import (
    AttemptView,
    EventView,
    JobPublic,
    JobStatus,
    SliceView,
    Waiting,
)
from orrery_hub.store.models import AttemptRow, AuditRow, EventRow, JobRow, SliceRow

PAGE = 1000  # rows per page of events and attempts, unless the caller asks for fewer
MAX_PAGE = 10_000


def get_row(s: Session, job_id: str) -> JobRow:
    job = s.exec(select(JobRow).where(JobRow.id == job_id)).first()
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    return job


def slices_of(s: Session, job_id: str) -> list[SliceRow]:
    return list(
        s.exec(select(SliceRow).where(SliceRow.job_id == job_id).order_by(col(SliceRow.index)))
    )


def view(job: JobRow, slices: list[SliceRow]) -> JobPublic:
    m = job.manifest
    waiting = None
    if job.phase == "Pending" and job.waiting:
        w = dict(job.waiting)
        summary = w.pop("", job.reason or "waiting")
        waiting = Waiting(summary=summary, clusters=w)
    return JobPublic(
        id=job.id,
        metadata=m["metadata"],
        spec=m["spec"],
        status=JobStatus(
            phase=job.phase,
            reason=job.reason,
            waiting=waiting,
            slices=[
                SliceView(
                    index=sl.index,
                    phase=sl.phase,
                    epoch=sl.epoch,
                    attempts=sl.attempts,
                    cluster=sl.cluster,
                    node=sl.node,
                    gpus=list(sl.gpus),
                    progress=sl.progress,
                )
                for sl in slices
            ],
            restarts=job.restarts,
            checkpoint=job.checkpoint,
            checkpoint_step=job.checkpoint_step,
            checkpoint_dir=job.checkpoint_dir,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        ),
    )


def get(s: Session, job_id: str) -> JobPublic:
    job = get_row(s, job_id)
    return view(job, slices_of(s, job_id))


def list_jobs(
    s: Session,
    *,
    phase: str | None = None,
    limit: int = 500,
    team: str | None = None,
    queue: str | None = None,
    name: str | None = None,
) -> list[JobPublic]:
    """Newest first; each filter given must hold (``team`` also scopes a team's caller)."""
    q = select(JobRow).order_by(col(JobRow.seq).desc()).limit(limit)
    if phase:
        q = q.where(JobRow.phase == phase)
    if team is not None:  # a team-scoped caller sees its own team's jobs only
        q = q.where(JobRow.team == team)
    if queue is not None:
        q = q.where(JobRow.queue == queue)
    if name is not None:
        q = q.where(JobRow.name == name)
    jobs = list(s.exec(q))
    if not jobs:
        return []
    ids = [j.id for j in jobs]
    by_job: dict[str, list[SliceRow]] = {i: [] for i in ids}
    for sl in s.exec(
        select(SliceRow).where(col(SliceRow.job_id).in_(ids)).order_by(col(SliceRow.index))
    ):
        by_job[sl.job_id].append(sl)
    return [view(j, by_job[j.id]) for j in jobs]


def events(
    s: Session, job_id: str, *, after: int | None = None, limit: int = PAGE
) -> list[EventView]:
    """A job's events, oldest first: at most ``limit``, those after the id ``after``."""
    get_row(s, job_id)
    q = select(EventRow).where(EventRow.job_id == job_id)
    if after is not None:
        q = q.where(col(EventRow.id) > after)
    rows = s.exec(q.order_by(col(EventRow.id)).limit(limit))
    return [
        EventView(
            id=e.id,
            at=e.at,
            kind=e.kind,
            message=e.message,
            index=e.index,
            epoch=e.epoch,
            cluster=e.cluster,
        )
        for e in rows
    ]


def attempts(
    s: Session, job_id: str, *, after: int | None = None, limit: int = PAGE
) -> list[AttemptView]:
    """A job's attempts, oldest first: at most ``limit``, those after the id ``after``."""
    get_row(s, job_id)
    q = select(AttemptRow).where(AttemptRow.job_id == job_id)
    if after is not None:
        q = q.where(col(AttemptRow.id) > after)
    rows = s.exec(q.order_by(col(AttemptRow.id)).limit(limit))
    return [
        AttemptView(
            id=a.id,
            index=a.index,
            epoch=a.epoch,
            cluster=a.cluster,
            node=a.node,
            gpus=list(a.gpus),
            phase=a.phase,
            assigned_at=a.assigned_at,
            started_at=a.started_at,
            ended_at=a.ended_at,
            exit_code=a.exit_code,
            reason=a.reason,
        )
        for a in rows
    ]


def audit(s: Session, *, job: str | None, limit: int, before: int | None = None) -> list[AuditRow]:
    """Audit rows, newest first: at most ``limit``, those older than the id ``before``."""
    q = select(AuditRow).order_by(col(AuditRow.id).desc()).limit(limit)
    if job:
        q = q.where(AuditRow.job_id == job)
    if before is not None:
        q = q.where(col(AuditRow.id) < before)
    return list(s.exec(q))


def job_counts(s: Session) -> dict[str, int]:
    """Jobs per phase, counted by the database on its phase index: reading every job's
    phase out took half a second at 100,000 jobs, on the store thread that admissions
    and heartbeats wait behind (each ``/metrics`` scrape and console refresh asks)."""
    rows = s.exec(select(JobRow.phase, func.count()).group_by(col(JobRow.phase))).all()
    return {phase: int(n) for phase, n in rows}


HELD = ("Assigned", "Running")


def queue_counts(s: Session) -> tuple[dict[str, int], dict[str, int]]:
    """Jobs pending, and GPUs held by assigned or running slices, per queue."""
    pending = dict(
        s.exec(
            select(JobRow.queue, func.count())
            .where(JobRow.phase == "Pending")
            .group_by(JobRow.queue)
        ).all()
    )
    in_use: dict[str, int] = {}
    rows = s.exec(
        select(JobRow.queue, SliceRow.gpus)
        .join(SliceRow, col(SliceRow.job_id) == col(JobRow.id))
        .where(col(SliceRow.phase).in_(HELD))
    ).all()
    for queue, gpus in rows:
        in_use[queue] = in_use.get(queue, 0) + len(gpus)
    return pending, in_use
