"""An attempt ends: what its slice and its job become (succeeded, requeued at a new epoch,
restarted as a gang, or failed past maxRetries), and an attempt whose end is unknown held."""

from __future__ import annotations

import logging
import random

from sqlmodel import Session, col, select

from orrery.manifest import RestartPolicy
from orrery.resources import FINAL_JOB_PHASES
from orrery_hub.config.settings import HubSettings
from orrery_hub.reconcile.outbox import Outbox
from orrery_hub.store.jobs import add_event
from orrery_hub.store.models import AttemptRow, JobRow, SliceRow

log = logging.getLogger("orrery.hub.reconcile")


ACTIVE = ("Assigned", "Running")
INFRA_REASONS = ("cluster lost", "node lost", "vanished", "lease lapsed", "gpus busy")


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


def _requeue(s: Session, job: JobRow, sl: SliceRow, now: float, delay: float) -> None:
    sl.phase = "Pending"
    sl.epoch += 1
    sl.cluster = None
    sl.node = None
    sl.gpus = []
    sl.confirmed_by = None
    sl.not_before = now + delay
    sl.updated_at = now
    s.add(sl)


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
    """Close an attempt and, if it was its slice's current one, decide what comes next."""
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
    sl = next((x for x in slices if x.index == a.index), None)
    if sl is None or sl.epoch != a.epoch or sl.phase not in ACTIVE:
        return  # a stale epoch stopped, as ordered
    if job.phase in FINAL_JOB_PHASES:
        return
    spec = job.manifest["spec"]
    if phase == "Succeeded":
        sl.phase = "Succeeded"
        sl.updated_at = now
        s.add(sl)
        add_event(
            s,
            at=now,
            kind="SliceSucceeded",
            job_id=job.id,
            index=sl.index,
            epoch=sl.epoch,
            cluster=a.cluster,
            message=f"slice {sl.index} exited 0",
        )
        refresh_job_phase(s, job, slices, now)
        return

    # Stopped by the platform rather than failed by the workload: the spoke stopped it (its
    # lease lapsed, it shut down), the hub lost it, or it was preempted. Requeued at once,
    # not counted against maxRetries. The spoke says which where it knows (``cause``); a
    # spoke one version behind does not, and its reason's prefix decides.
    infra = platform_failure(phase, reason, cause)
    what = f"exit code {exit_code}" if exit_code is not None else (reason or phase)
    if a.preempted_for:
        what = f"preempted for {a.preempted_for}"
    add_event(
        s,
        at=now,
        kind="Preempted" if a.preempted_for else "SliceFailed",
        job_id=job.id,
        index=sl.index,
        epoch=sl.epoch,
        cluster=a.cluster,
        message=f"slice {sl.index} epoch {sl.epoch} on {a.cluster}: "
        f"{what}" + (f" ({reason})" if reason and exit_code is not None else ""),
    )
    max_retries = int(spec.get("maxRetries", 3))
    policy = spec.get("restartPolicy", RestartPolicy.GANG.value)
    if policy == RestartPolicy.SLICE.value:
        if not infra:
            sl.failures += 1
        if sl.failures > max_retries:
            fail_job(
                s,
                job,
                f"slice {sl.index} failed {sl.failures} times "
                f"(maxRetries {max_retries}); last: {what}",
                now,
                out,
                settings,
            )
            return
        _requeue(s, job, sl, now, 0.0 if infra else _backoff(settings, sl.failures))
        add_event(
            s,
            at=now,
            kind="Requeued",
            job_id=job.id,
            index=sl.index,
            epoch=sl.epoch,
            message=f"slice {sl.index} will run again at epoch {sl.epoch}",
        )
    else:
        if not infra:
            job.restarts += 1
        if job.restarts > max_retries:
            fail_job(
                s,
                job,
                f"gang failed {job.restarts} times (maxRetries {max_retries}); "
                f"last: slice {sl.index} {what}",
                now,
                out,
                settings,
            )
            return
        delay = 0.0 if infra else _backoff(settings, job.restarts)
        for other in slices:
            if other.phase in ACTIVE or other.phase == "Pending":
                if other.index != sl.index and other.phase in ACTIVE and other.cluster:
                    out.kill(
                        other.cluster,
                        job.id,
                        other.index,
                        other.epoch,
                        f"gang restart after slice {sl.index} failed",
                        settings.timing.kill_grace_s,
                    )
                _requeue(s, job, other, now, delay)
        add_event(
            s,
            at=now,
            kind="GangRestart",
            job_id=job.id,
            epoch=sl.epoch,
            message=f"restarting all {len(slices)} slices at epoch {sl.epoch}"
            + (f" from checkpoint {job.checkpoint}" if job.checkpoint else ""),
        )
    refresh_job_phase(s, job, slices, now)


def platform_failure(phase: str, reason: str | None, cause: str | None) -> bool:
    """True when an ending is the platform's doing (not counted against maxRetries)."""
    if cause is not None:
        return cause == "platform"
    return phase in ("Killed", "Lost") or (reason is not None and reason.startswith(INFRA_REASONS))


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
