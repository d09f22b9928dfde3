"""Compare what a spoke reports with what the hub wants, and decide what to do about it.

Level-triggered (DESIGN.md principle 1): every function here takes the current truth —
a spoke's complete report, or "this cluster is Lost" — and the desired state in the store,
and returns the orders that close the gap. Orders are idempotent, so deciding the same
thing twice is harmless, and a lost message is repaired by the next heartbeat.

Called by the service inside one store transaction per report.
"""

from __future__ import annotations

import logging
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from orrery.manifest import RestartPolicy
from orrery.resources import FINAL_JOB_PHASES
from orrery.wire import Assignment, Kill, SecretEnv, SliceKey, SlicePhase, SliceReport
from orrery_hub.settings import HubSettings
from orrery_hub.store.jobs import add_event
from orrery_hub.store.models import AttemptRow, JobRow, SliceRow

log = logging.getLogger("orrery.hub.reconcile")

ACTIVE = ("Assigned", "Running")
INFRA_REASONS = ("cluster lost", "node lost", "vanished", "lease lapsed", "gpus busy")


@dataclass
class Outbox:
    """Orders to publish once the transaction that decided them has committed."""

    orders: list[tuple[str, Assignment | Kill]] = field(default_factory=list)
    forget: list[SliceKey] = field(default_factory=list)
    changed: bool = False  # something a scheduling pass should look at

    def kill(
        self, cluster: str, job: str, index: int, epoch: int, reason: str, grace_s: float
    ) -> None:
        self.orders.append(kill_order(cluster, job, index, epoch, reason, grace_s))

    def extend(self, other: Outbox) -> None:
        self.orders.extend(other.orders)
        self.forget.extend(other.forget)
        self.changed = self.changed or other.changed


def kill_order(
    cluster: str, job: str, index: int, epoch: int, reason: str, grace_s: float
) -> tuple[str, Kill]:
    """Stop ``job``'s slice ``index`` at ``epoch`` (or older) on ``cluster``."""
    kill = Kill(
        sender="hub", seq=0, job=job, index=index, epoch=epoch, reason=reason, grace_s=grace_s
    )
    return cluster, kill


def master_port(job_id: str, epoch: int) -> int:
    """A port for rank 0's rendezvous, fresh for each epoch."""
    return 20000 + zlib.crc32(f"{job_id}:{epoch}".encode()) % 30000


def split_env(env: dict[str, Any]) -> tuple[dict[str, str], dict[str, SecretEnv]]:
    """A manifest's env as stored: plain values, and secret references (sent as references;
    the spoke resolves them)."""
    plain: dict[str, str] = {}
    refs: dict[str, SecretEnv] = {}
    for k, v in env.items():
        if isinstance(v, dict):
            refs[k] = SecretEnv(name=v["secretRef"], key=v.get("key"))
        else:
            plain[k] = str(v)
    return plain, refs


def assignment_for(job: JobRow, sl: SliceRow) -> Assignment:
    spec = job.manifest["spec"]
    from orrery.duration import parse_duration

    runtime = spec.get("maxRuntime")
    plain, secrets = split_env(spec.get("env", {}))
    return Assignment(
        sender="hub",
        seq=0,
        job=job.id,
        job_name=job.name,
        index=sl.index,
        epoch=sl.epoch,
        world_size=int(spec.get("slices", 1)),
        node=sl.node or "",
        gpus=list(sl.gpus),
        master_addr=sl.master_addr or "127.0.0.1",
        master_port=sl.master_port or 29500,
        command=list(spec["command"]),
        image=spec.get("image"),
        env=plain,
        secret_env=secrets or None,
        checkpoint_dir=job.checkpoint_dir,
        checkpoint=job.checkpoint,
        max_runtime_s=parse_duration(runtime) if runtime is not None else None,
    )


def _backoff(settings: HubSettings, failures: int) -> float:
    if failures <= 0:
        return 0.0
    cap = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (failures - 1))
    return random.uniform(cap / 2, cap)  # jitter: restarts of many jobs do not align


def _job(s: Session, job_id: str) -> JobRow | None:
    return s.exec(select(JobRow).where(JobRow.id == job_id)).first()


def _slices(s: Session, job_id: str) -> list[SliceRow]:
    return list(s.exec(select(SliceRow).where(SliceRow.job_id == job_id)))


def _attempt(s: Session, job_id: str, index: int, epoch: int) -> AttemptRow | None:
    return s.exec(
        select(AttemptRow)
        .where(AttemptRow.job_id == job_id, AttemptRow.index == index, AttemptRow.epoch == epoch)
        .order_by(col(AttemptRow.id).desc())
    ).first()


def _refresh_job_phase(s: Session, job: JobRow, slices: list[SliceRow], now: float) -> None:
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
    for sl in _slices(s, job.id):
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
    job = _job(s, a.job_id)
    if job is None:
        return
    slices = _slices(s, job.id)
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
        _refresh_job_phase(s, job, slices, now)
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
    _refresh_job_phase(s, job, slices, now)


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


def settle_unknown(s: Session, *, now: float, settings: HubSettings) -> Outbox:
    """Close the attempts whose fate stayed unknown past their bound, as Lost."""
    out = Outbox()
    for a in s.exec(
        select(AttemptRow).where(
            col(AttemptRow.ended_at).is_(None),
            col(AttemptRow.fate_unknown_until).is_not(None),
            col(AttemptRow.fate_unknown_until) <= now,
        )
    ).all():
        close_attempt(
            s,
            a,
            phase="Lost",
            now=now,
            reason=a.reason or "vanished",
            cause=a.cause,
            settings=settings,
            out=out,
        )
    return out


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
        job = _job(s, r.job)
        sl = next((x for x in _slices(s, r.job) if x.index == r.index), None) if job else None
        a = _attempt(s, r.job, r.index, r.epoch) if job else None
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
        _refresh_job_phase(s, job, _slices(s, job.id), now)

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
        job = _job(s, a.job_id)
        sl = next((x for x in _slices(s, a.job_id) if x.index == a.index), None) if job else None
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
                order = assignment_for(job, sl)
            except ValueError as exc:  # a row the wire refuses: commit fails such jobs
                log.error("cannot resend assignment", extra={"job": job.id, "error": str(exc)})
                continue
            out.orders.append((cluster, order))  # resend: it may be lost
    return out


def fail_cluster(s: Session, cluster: str, *, now: float, settings: HubSettings) -> Outbox:
    """The cluster is Lost: its spoke's lease has stopped its slices; place them elsewhere."""
    out = Outbox()
    for a in s.exec(
        select(AttemptRow).where(AttemptRow.cluster == cluster, col(AttemptRow.ended_at).is_(None))
    ).all():
        close_attempt(
            s,
            a,
            phase="Lost",
            now=now,
            reason="cluster lost (silent past the failover timeout)",
            settings=settings,
            out=out,
        )
    add_event(
        s,
        at=now,
        kind="ClusterLost",
        cluster=cluster,
        message=f"{cluster} silent past {settings.timing.failover_timeout_s}s",
    )
    return out


def fail_nodes(
    s: Session, cluster: str, nodes: set[str], *, now: float, settings: HubSettings
) -> Outbox:
    """Nodes the spoke no longer reports (or reports not ready): their slices move."""
    out = Outbox()
    for a in s.exec(
        select(AttemptRow).where(AttemptRow.cluster == cluster, col(AttemptRow.ended_at).is_(None))
    ).all():
        if a.node in nodes:
            out.kill(cluster, a.job_id, a.index, a.epoch, "node lost", settings.timing.kill_grace_s)
            close_attempt(
                s,
                a,
                phase="Lost",
                now=now,
                reason=f"node lost ({a.node})",
                settings=settings,
                out=out,
            )
    return out
