"""Fold a spoke's reports (a complete heartbeat, or one slice's status) into the desired
state: confirm, resend, fence, hold or close attempts, and order stale epochs killed."""

from __future__ import annotations

import logging

from sqlmodel import Session, col, select

from orrery.resources import FINAL_JOB_PHASES
from orrery.wire import SlicePhase, SliceReport
from orrery_hub.config.settings import HubSettings
from orrery_hub.datasets.orders import data_order
from orrery_hub.lifecycle import ACTIVE
from orrery_hub.reconcile.assignment import assignment_for
from orrery_hub.reconcile.lifecycle import (
    attempt_row,
    close_attempt,
    hold_unknown,
    job_row,
    refresh_job_phase,
    slice_rows,
)
from orrery_hub.reconcile.outbox import Outbox
from orrery_hub.store.jobs import add_event
from orrery_hub.store.models import AttemptRow, JobRow, SliceRow

log = logging.getLogger("orrery.hub.reconcile")


def settles(r: SliceReport, a: AttemptRow, incarnation: str) -> bool:
    """Whether a terminal report proves the attempt's process tree is gone.

    Not when the spoke itself lost track of it ("vanished": its supervisor died, its
    markers are gone), nor when an incarnation other than the one that ran it answers
    without an exit code (say, "killed before it started" from a restarted agent)."""
    if r.phase == SlicePhase.SUCCEEDED:
        return True
    if (r.reason or "").startswith("vanished"):
        return False
    return not (a.seen_by is not None and a.seen_by != incarnation and r.exit_code is None)


def _record_progress(job: JobRow, sl: SliceRow, r: SliceReport, now: float) -> None:
    if r.progress is None:
        return
    sl.progress = r.progress.model_dump(exclude_none=True)
    p = r.progress
    if p.checkpoint and (
        job.checkpoint_step is None or (p.checkpoint_step or 0) >= job.checkpoint_step
    ):
        if job.checkpoint != p.checkpoint:
            job.checkpoint_at = now
        job.checkpoint = p.checkpoint
        job.checkpoint_step = p.checkpoint_step


def apply_reports(
    s: Session,
    *,
    cluster: str,
    incarnation: str,
    seq: int,
    reports: list[SliceReport],
    complete: bool,
    now: float,
    settings: HubSettings,
    lease_s: float | None = None,
) -> Outbox:
    """Fold a spoke's slice reports into the desired state.

    ``complete`` is True for a heartbeat (it lists every slice the spoke knows): then a
    slice the hub placed there but the spoke does not list is resent, fenced when its
    assignment was never confirmed in time, or held as vanished. ``lease_s``: the spoke's
    lease, which bounds how long an attempt of unknown fate is held.
    """
    out = Outbox()
    confirm = f"{incarnation}:{seq}"
    grace = settings.timing.kill_grace_s
    bound = settings.timing.fate_bound(lease_s)
    reported: set[tuple[str, int, int]] = set()
    for r in reports:
        reported.add((r.job, r.index, r.epoch))
        job = job_row(s, r.job)
        sl = next((x for x in slice_rows(s, r.job) if x.index == r.index), None) if job else None
        a = attempt_row(s, r.job, r.index, r.epoch) if job else None
        current = (
            job is not None
            and sl is not None
            and job.phase not in FINAL_JOB_PHASES
            and sl.epoch == r.epoch
            and sl.phase in ACTIVE
            and sl.cluster == cluster
        )
        if r.phase.terminal:
            if a is not None and a.cluster == cluster and a.ended_at is None:
                if a.started_at is None and r.started_at is not None:
                    a.started_at = r.started_at
                if job is not None and sl is not None and current:
                    _record_progress(job, sl, r, now)
                    s.add(job)
                phase = {
                    SlicePhase.SUCCEEDED: "Succeeded",
                    SlicePhase.FAILED: "Failed",
                    SlicePhase.KILLED: "Killed",
                }[r.phase]
                if settles(r, a, incarnation):
                    close_attempt(
                        s,
                        a,
                        phase=phase,
                        now=now,
                        ended_at=r.finished_at,
                        exit_code=r.exit_code,
                        reason=r.reason,
                        cause=r.cause,
                        settings=settings,
                        out=out,
                    )
                else:
                    why = r.reason or phase
                    if a.seen_by is not None and a.seen_by != incarnation:
                        why = f"{why} (said by an agent incarnation that never ran it)"
                    hold_unknown(s, a, reason=why, now=now, bound=bound, cause=r.cause)
            if a is None or a.ended_at is not None or a.cluster != cluster:
                out.forget.append(r.key)  # recorded: the spoke may stop reporting it
            continue
        if a is not None and a.cluster == cluster and a.ended_at is None:
            # A sign of life: whatever made its fate unknown, it is known again.
            if a.seen_by != incarnation:
                a.seen_by = incarnation
            if a.fate_unknown_until is not None:
                a.fate_unknown_until = None
                a.reason = a.cause = None  # the hold's, not an ending's
                log.info(
                    "attempt reported again; no longer held",
                    extra={"job": r.job, "slice": r.index, "epoch": r.epoch, "cluster": cluster},
                )
            s.add(a)
        if not current:
            log.info(
                "ordering stale slice killed",
                extra={"job": r.job, "slice": r.index, "epoch": r.epoch, "cluster": cluster},
            )
            out.kill(cluster, r.job, r.index, r.epoch, "not the current epoch", grace)
            continue
        assert job is not None and sl is not None
        if a is not None and a.preempted_for and a.ended_at is None:
            # Preempted but still running: the kill may have been lost, so say it again,
            # as for any other slice that should have stopped.
            out.kill(
                cluster,
                r.job,
                r.index,
                r.epoch,
                f"preempted for {a.preempted_for}",
                a.stop_grace_s if a.stop_grace_s is not None else grace,
            )
        if a is not None and a.started_at is None and r.started_at is not None:
            a.started_at = r.started_at
            a.phase = "Running"
            s.add(a)
        if sl.phase == "Assigned":
            sl.phase = "Running"
            add_event(
                s,
                at=now,
                kind="Running",
                job_id=job.id,
                index=sl.index,
                epoch=sl.epoch,
                cluster=cluster,
                message=f"slice {sl.index} running on {cluster}/{sl.node}",
            )
        sl.confirmed_by = confirm
        _record_progress(job, sl, r, now)
        sl.updated_at = now
        s.add(sl)
        s.add(job)
        refresh_job_phase(s, job, slice_rows(s, job.id), now)

    if not complete:
        return out
    # What the hub placed here that the spoke did not mention.
    open_here = s.exec(
        select(AttemptRow).where(AttemptRow.cluster == cluster, col(AttemptRow.ended_at).is_(None))
    ).all()
    for a in open_here:
        if (a.job_id, a.index, a.epoch) in reported:
            continue
        if a.fate_unknown_until is not None:
            # Held: never resent (it may still run). Fenced if it was never seen running,
            # so that a late delivery of its assignment does not start it.
            if a.seen_by is None:
                out.kill(cluster, a.job_id, a.index, a.epoch, "assignment timed out", grace)
            continue
        job = job_row(s, a.job_id)
        sl = next((x for x in slice_rows(s, a.job_id) if x.index == a.index), None) if job else None
        current = (
            job is not None
            and sl is not None
            and job.phase not in FINAL_JOB_PHASES
            and sl.epoch == a.epoch
            and sl.phase in ACTIVE
            and sl.cluster == cluster
        )
        if not current:
            # Make sure it never starts; the spoke answers with a Killed report.
            out.kill(cluster, a.job_id, a.index, a.epoch, "not the current epoch", grace)
            continue
        assert job is not None and sl is not None
        confirmed_inc, _, confirmed_seq = (sl.confirmed_by or "").partition(":")
        if (
            sl.phase == "Running"
            and sl.confirmed_by
            and (confirmed_inc != incarnation or int(confirmed_seq) < seq)
        ):
            # Its spoke restarted, or says it no longer has it: no proof that its process
            # tree is gone (a supervisor killed, a forged or confused report). Held.
            hold_unknown(s, a, reason="vanished from its spoke's report", now=now, bound=bound)
        elif sl.phase == "Assigned" and now - a.assigned_at > settings.timing.assign_timeout:
            # Never confirmed: fence it (a late delivery must not start it) and hold it
            # until the kill is answered or the bound passes; then it is placed again,
            # without using a retry.
            out.kill(cluster, a.job_id, a.index, a.epoch, "assignment timed out", grace)
            hold_unknown(
                s,
                a,
                reason=f"assignment not confirmed within {settings.timing.assign_timeout:.1f}s",
                now=now,
                bound=bound,
                cause="platform",
            )
        else:
            try:
                order = assignment_for(job, sl, data_order(s, job, sl))
            except ValueError as exc:  # a row the wire refuses: commit fails such jobs
                log.error("cannot resend assignment", extra={"job": job.id, "error": str(exc)})
                continue
            out.orders.append((cluster, order))  # resend: it may be lost
    return out
