"""Retention: the event and audit rows of jobs finished long ago are pruned, so the store
does not grow without bound with the work it has already done.

``prune(s, now=..., keep_s=...)`` deletes, for jobs that finished more than ``keep_s``
ago, their events and their audit rows, and cluster events (no job) older than that. The
job row itself, its slices and its attempts stay (usage reports read attempts). A pass
prunes at most ``batch`` jobs, so the store thread is never held long; the service calls it
every ``RETENTION_EVERY_S`` from the reconcile loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete
from sqlmodel import Session, col, select

from orrery.resources import FINAL_JOB_PHASES
from orrery_hub.store.models import AuditRow, EventRow, JobRow

RETENTION_EVERY_S = 600.0


@dataclass(frozen=True)
class Pruned:
    jobs: int
    events: int
    audit: int


def prune(s: Session, *, now: float, keep_s: float, batch: int = 500) -> Pruned:
    cutoff = now - keep_s
    # Jobs finished before the cutoff that still have rows to prune, oldest first.
    finished = list(
        s.exec(
            select(JobRow.id)
            .where(
                col(JobRow.phase).in_(FINAL_JOB_PHASES),
                col(JobRow.finished_at) < cutoff,
                col(JobRow.id).in_(select(EventRow.job_id).where(col(EventRow.job_id).is_not(None)))
                | col(JobRow.id).in_(
                    select(AuditRow.job_id).where(col(AuditRow.job_id).is_not(None))
                ),
            )
            .order_by(col(JobRow.finished_at))
            .limit(batch)
        )
    )
    events = audit = 0
    if finished:
        events = s.exec(delete(EventRow).where(col(EventRow.job_id).in_(finished))).rowcount
        audit = s.exec(delete(AuditRow).where(col(AuditRow.job_id).in_(finished))).rowcount
    events += s.exec(
        delete(EventRow).where(col(EventRow.job_id).is_(None), col(EventRow.at) < cutoff)
    ).rowcount
    return Pruned(jobs=len(finished), events=events, audit=audit)
