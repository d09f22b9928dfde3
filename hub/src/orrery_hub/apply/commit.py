"""Write a plan to the store: placements (each job checked against the version its
snapshot saw, in its own savepoint), preemptions, and jobs that cannot be placed at all.

Called by ``Applier`` on the store thread."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import update
from sqlmodel import Session, col, select

from orrery.wire import Assignment, Kill
from orrery.wire.messages import clip
from orrery_hub.apply.queued import ACTIVE_JOB
from orrery_hub.datasets.orders import data_order
from orrery_hub.reconcile import assignment_for, kill_order, master_port
from orrery_hub.scheduler import (
    Plan,
    SlicePlacement,
)
from orrery_hub.store.jobs import add_event
from orrery_hub.store.models import AttemptRow, AuditRow, JobRow, SliceRow

log = logging.getLogger("orrery.hub.applier")


def preempt(s: Session, plan: Plan, *, now: float, digest: str) -> list[tuple[str, Kill]]:
    """Order the plan's victims to stop, with the grace to checkpoint. Once their
    attempts report stopped they are requeued (``reconcile.close_attempt``: a Killed
    attempt is not a failure), and the preemptor is placed in a later pass. Until then
    every heartbeat that still reports a victim running resends its kill
    (``reconcile.apply_reports``), so a lost kill never leaves the preemptor waiting."""
    orders: list[tuple[str, Kill]] = []
    for p in plan.preemptions:
        victims = list(
            s.exec(
                select(AttemptRow).where(
                    AttemptRow.job_id == p.victim, col(AttemptRow.ended_at).is_(None)
                )
            )
        )
        for a in victims:  # the whole victim job, even where it spans clusters
            if a.preempted_for is None:
                a.preempted_for = str(p.for_job)
                a.stop_grace_s = p.grace_s  # heartbeats resend the kill with it
                s.add(a)
            orders.append(
                kill_order(
                    a.cluster, a.job_id, a.index, a.epoch, f"preempted: {p.reason}", p.grace_s
                )
            )
        add_event(
            s,
            at=now,
            kind="Preempting",
            job_id=str(p.victim),
            cluster=str(p.cluster),
            message=f"preempted for {p.for_job}: {p.reason} (loses about "
            f"{p.lost_gpu_seconds / 3600:.2f} GPU-hours since its last checkpoint)",
        )
        s.add(
            AuditRow(
                at=now,
                kind="preempt",
                job_id=str(p.victim),
                decision="preempted",
                detail=f"for {p.for_job} on {p.cluster}: {p.reason}",
                policies=[],
                digest=digest,
            )
        )
    return orders


# ---- commit -------------------------------------------------------------------------


def commit_job(
    s: Session,
    job_id: str,
    placements: list[SlicePlacement],
    versions: dict[str, int],
    addresses: Mapping[str, str],
    gpu_types: Mapping[tuple[str, str], str | None],
    now: float,
    digest: str,
) -> list[tuple[str, Assignment]]:
    orders: list[tuple[str, Assignment]] = []
    job = s.exec(select(JobRow).where(JobRow.id == job_id)).first()
    if job is None or job.version != versions.get(job_id) or job.phase not in ACTIVE_JOB:
        return []  # changed underneath the pass (e.g. cancelled): the next pass decides
    slices = {sl.index: sl for sl in s.exec(select(SliceRow).where(SliceRow.job_id == job_id))}
    if any(slices[p.index].phase != "Pending" for p in placements):
        return []
    # Rank 0's address is the rendezvous for the whole gang, fresh for each epoch.
    zero = next((p for p in placements if p.index == 0), None)
    if zero is not None:
        m_addr = addresses.get(zero.cluster, "127.0.0.1")
        m_port = master_port(job_id, slices[0].epoch)
    else:
        m_addr = slices[0].master_addr or "127.0.0.1"
        m_port = slices[0].master_port or master_port(job_id, slices[0].epoch)
    for p in placements:
        sl = slices[p.index]
        sl.phase = "Assigned"
        sl.cluster = p.cluster
        sl.node = p.node
        sl.gpus = list(p.gpus)
        sl.master_addr = m_addr
        sl.master_port = m_port
        sl.attempts += 1
        sl.updated_at = now
        s.add(sl)
        s.add(
            AttemptRow(
                job_id=job_id,
                index=p.index,
                epoch=sl.epoch,
                cluster=p.cluster,
                node=p.node,
                gpus=list(p.gpus),
                assigned_at=now,
                gpu_type=gpu_types.get((p.cluster, p.node)),
            )
        )
        orders.append((p.cluster, assignment_for(job, sl, data_order(s, job, sl))))
    where = ", ".join(sorted({p.cluster for p in placements}))
    add_event(
        s,
        at=now,
        kind="Placed",
        job_id=job_id,
        message=f"{len(placements)} slice(s) placed on {where}",
    )
    s.add(
        AuditRow(
            at=now,
            kind="place",
            job_id=job_id,
            decision="placed",
            detail=f"slices {sorted(p.index for p in placements)} on {where}",
            policies=[],
            digest=digest,
        )
    )
    job.waiting = None
    job.reason = None
    job.version += 1
    s.add(job)
    return orders


def fail_unplaceable(s: Session, job_id: str, exc: Exception, *, now: float) -> None:
    """Mark a job whose placement could not be written Failed, with why, so it never
    fails another pass. If even that cannot be written, it is logged and skipped."""
    reason = clip(f"could not be placed: {type(exc).__name__}: {exc}", 1024)
    log.error("job failed at commit", extra={"job": job_id, "reason": reason})
    try:
        with s.begin_nested():
            s.exec(
                update(JobRow)
                .where(col(JobRow.id) == job_id)
                .values(
                    phase="Failed",
                    reason=reason,
                    finished_at=now,
                    waiting=None,
                    version=JobRow.version + 1,
                )
            )
            s.exec(
                update(SliceRow)
                .where(
                    col(SliceRow.job_id) == job_id,
                    col(SliceRow.phase).in_(("Pending", "Assigned", "Running")),
                )
                .values(phase="Failed", updated_at=now)
            )
            add_event(s, at=now, kind="Failed", job_id=job_id, message=reason)
            s.flush()
    except Exception:
        log.exception("could not mark job failed", extra={"job": job_id})
