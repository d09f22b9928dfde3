"""An attempt ends: what its slice and its job become (succeeded, requeued at a new epoch,
restarted as a gang, or failed past maxRetries), and an attempt whose end is unknown held."""

from __future__ import annotations

import logging
import random

from sqlmodel import Session, col, select

from orrery.manifest import RestartPolicy
from orrery.resources import FINAL_JOB_PHASES
from orrery_hub.config.settings import HubSettings
from orrery_hub.lifecycle import (
    AttemptEnd,
    JobState,
    SliceState,
    Transition,
    on_attempt_end,
)
from orrery_hub.reconcile.outbox import Outbox
from orrery_hub.store.jobs import add_event
from orrery_hub.store.models import AttemptRow, JobRow, SliceRow

log = logging.getLogger("orrery.hub.reconcile")


def _backoff(settings: HubSettings, failures: int) -> float:
    if failures <= 0:
        return 0.0
    cap = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (failures - 1))
    return random.uniform(cap / 2, cap)  # jitter: restarts of many jobs do not align


def job_row(s: Session, job_id: str) -> JobRow | None:
    return s.exec(select(JobRow).where(JobRow.id == job_id)).first()


def slice_rows(s: Session, job_id: str) -> list[SliceRow]:
    return list(s.exec(select(SliceRow).where(SliceRow.job_id == job_id)))


def attempt_row(s: Session, job_id: str, index: int, epoch: int) -> AttemptRow | None:
    return s.exec(
        select(AttemptRow)
        .where(AttemptRow.job_id == job_id, AttemptRow.index == index, AttemptRow.epoch == epoch)
        .order_by(col(AttemptRow.id).desc())
    ).first()


def refresh_job_phase(s: Session, job: JobRow, slices: list[SliceRow], now: float) -> None:
    if job.phase in FINAL_JOB_PHASES:
        return
    phases = [sl.phase for sl in slices]
    if all(p == "Succeeded" for p in phases):
        job.phase = "Succeeded"
        job.finished_at = now
        job.reason = None
        job.waiting = None
        add_event(s, at=now, kind="Succeeded", job_id=job.id, message="all slices succeeded")
    elif any(p == "Running" for p in phases):
        if job.phase != "Running":
            job.started_at = job.started_at or now
            job.waiting = None
            job.reason = None
        job.phase = "Running"
    else:
        job.phase = "Pending"
    job.version += 1
    s.add(job)


def fail_job(
    s: Session, job: JobRow, reason: str, now: float, out: Outbox, settings: HubSettings
) -> None:
    job.phase = "Failed"
    job.reason = reason
    job.finished_at = now
    job.waiting = None
    job.version += 1
    s.add(job)
    for sl in slice_rows(s, job.id):
        if sl.phase not in ("Succeeded", "Failed", "Cancelled"):
            sl.phase = "Failed"
            sl.updated_at = now
            s.add(sl)
    for a in s.exec(
        select(AttemptRow).where(AttemptRow.job_id == job.id, col(AttemptRow.ended_at).is_(None))
    ):
        out.kill(a.cluster, job.id, a.index, a.epoch, "job failed", settings.timing.kill_grace_s)
    add_event(s, at=now, kind="Failed", job_id=job.id, message=reason)
    log.warning("job failed", extra={"job": job.id, "reason": reason})


def _requeue(sl: SliceRow, new: SliceState, now: float) -> None:
    sl.phase = "Pending"
    sl.epoch = new.epoch
    sl.cluster = None
    sl.node = None
    sl.gpus = []
    sl.confirmed_by = None
    sl.not_before = new.not_before
    sl.updated_at = now


def job_state(job: JobRow) -> JobState:
    spec = job.manifest["spec"]
    return JobState(
        id=job.id,
        phase=job.phase,
        gang=spec.get("restartPolicy", RestartPolicy.GANG.value) != RestartPolicy.SLICE.value,
        max_retries=int(spec.get("maxRetries", 3)),
        restarts=job.restarts,
        checkpoint=job.checkpoint,
    )


def slice_state(sl: SliceRow) -> SliceState:
    return SliceState(sl.index, sl.phase, sl.epoch, sl.failures, sl.cluster, sl.not_before)


def close_attempt(
    s: Session,
    a: AttemptRow,
    *,
    phase: str,
    now: float,
    ended_at: float | None = None,
    exit_code: int | None = None,
    reason: str | None = None,
    cause: str | None = None,
    settings: HubSettings,
    out: Outbox,
) -> None:
    """Close an attempt and, if it was its slice's current one, do what the lifecycle
    (``orrery_hub.lifecycle.on_attempt_end``, shared with the simulator) decides."""
    if a.ended_at is not None:
        return
    a.phase = phase
    a.ended_at = ended_at if ended_at is not None else now
    a.exit_code = exit_code
    a.reason = reason
    a.cause = cause
    a.fate_unknown_until = None
    s.add(a)
    out.changed = True  # an open attempt held GPUs, or blocked the next epoch
    job = job_row(s, a.job_id)
    if job is None:
        return
    slices = slice_rows(s, job.id)
    t = on_attempt_end(
        job_state(job),
        tuple(slice_state(sl) for sl in slices),
        AttemptEnd(a.index, a.epoch, a.cluster, exit_code, reason, a.preempted_for),
        phase,
        cause,
        now,
        lambda failures: _backoff(settings, failures),
    )
    if not t.stale:
        apply_transition(s, job, slices, t, now=now, settings=settings, out=out)


def apply_transition(
    s: Session,
    job: JobRow,
    slices: list[SliceRow],
    t: Transition,
    *,
    now: float,
    settings: HubSettings,
    out: Outbox,
) -> None:
    """Write a lifecycle transition to the job's and its slices' rows, with its events."""
    for ev in t.events:
        if t.failed is None or ev.kind != "Failed":  # fail_job writes that one
            add_event(
                s,
                at=now,
                kind=ev.kind,
                job_id=job.id,
                index=ev.index,
                epoch=ev.epoch,
                cluster=ev.cluster,
                message=ev.message,
            )
    job.restarts = t.job.restarts
    by_index = {sl.index: sl for sl in slices}
    for new in t.slices:
        sl = by_index[new.index]
        sl.failures = new.failures
        if new.phase == "Pending" and new.epoch != sl.epoch:
            _requeue(sl, new, now)
        elif new.phase != sl.phase and t.failed is None:
            sl.phase = new.phase
            sl.updated_at = now
        s.add(sl)
    if t.failed is not None:
        fail_job(s, job, t.failed, now, out, settings)
        return
    for stop in t.stops:
        out.kill(
            stop.cluster, job.id, stop.index, stop.epoch, stop.reason, settings.timing.kill_grace_s
        )
    if t.job.phase == "Succeeded":
        job.finished_at = now
        job.reason = None
        job.waiting = None
    elif t.job.phase == "Running" and job.phase != "Running":
        job.started_at = job.started_at or now
        job.waiting = None
        job.reason = None
    job.phase = t.job.phase
    job.version += 1
    s.add(job)


def hold_unknown(
    s: Session, a: AttemptRow, *, reason: str, now: float, bound: float, cause: str | None = None
) -> None:
    """The attempt's end is unknown: its process tree may still live. Keep it open (its
    GPUs held, its slice's next epoch blocked) until ``bound`` from now, by when the
    spoke's lease has stopped it; a report that settles it may close it sooner."""
    if a.fate_unknown_until is not None:
        return
    a.fate_unknown_until = now + bound
    a.reason = reason
    a.cause = cause
    s.add(a)
    add_event(
        s,
        at=now,
        kind="FateUnknown",
        job_id=a.job_id,
        index=a.index,
        epoch=a.epoch,
        cluster=a.cluster,
        message=f"slice {a.index} epoch {a.epoch} on {a.cluster}: {reason}; "
        f"held {bound:.1f}s (lease + kill grace + drift) before it runs again",
    )
    log.warning(
        "attempt fate unknown; holding it",
        extra={
            "job": a.job_id,
            "slice": a.index,
            "epoch": a.epoch,
            "cluster": a.cluster,
            "reason": reason,
            "hold_s": round(bound, 2),
        },
    )
