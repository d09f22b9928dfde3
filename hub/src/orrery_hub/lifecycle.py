"""The slice lifecycle, as one pure function: an attempt ended — what happens next?

``on_attempt_end(job, slices, attempt, end, cause, now, backoff) -> Transition`` decides,
from plain values, what the hub's reconcile (``reconcile.lifecycle.close_attempt``) and
the simulator (``sim.engine``) both do when an attempt stops:

    end          cause               slice                   job
    Succeeded    -                   Succeeded               Succeeded once all are
    any other    platform            Pending, epoch + 1,     Pending (or Running if
                 (Killed, Lost,      now, no retry used      another slice runs)
                 preempted, ...)
    any other    workload            Pending, epoch + 1,     Failed past maxRetries
                                     after backoff, a retry  (kills what still runs)

With restartPolicy Gang every slice of the job restarts together at the next epoch (the
others are ordered killed); with Slice only the one that ended does, and it counts its own
retries. No IO, no clock (``now`` and ``backoff`` are arguments), so it is tested as tables
(tests/hub/test_lifecycle_table.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

ACTIVE = ("Assigned", "Running")
FINAL = ("Succeeded", "Failed", "Cancelled")
# Reasons a spoke one version behind gives for endings that are the platform's doing.
INFRA_REASONS = ("cluster lost", "node lost", "vanished", "lease lapsed", "gpus busy")


@dataclass(frozen=True, slots=True)
class SliceState:
    index: int
    phase: str
    epoch: int
    failures: int = 0  # workload failures counted against maxRetries (restartPolicy Slice)
    cluster: str | None = None
    not_before: float = 0.0


@dataclass(frozen=True, slots=True)
class JobState:
    id: str
    phase: str
    gang: bool = True  # restartPolicy Gang (else Slice)
    max_retries: int = 3
    restarts: int = 0  # gang restarts counted against maxRetries
    checkpoint: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """The attempt that stopped: which slice and epoch, where, and what it said."""

    index: int
    epoch: int
    cluster: str
    exit_code: int | None = None
    reason: str | None = None
    preempted_for: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    message: str
    index: int | None = None
    epoch: int | None = None
    cluster: str | None = None


@dataclass(frozen=True, slots=True)
class StopOrder:
    """A sibling slice still running that must stop (a gang restarts whole)."""

    cluster: str
    index: int
    epoch: int
    reason: str


@dataclass(frozen=True, slots=True)
class Transition:
    """What the ending changes. ``slices`` holds every slice (changed or not), in order;
    ``failed`` is the job's failure reason when it failed; ``stale`` means the attempt was
    not its slice's current one (or the job had ended): nothing changes."""

    job: JobState
    slices: tuple[SliceState, ...]
    events: tuple[Event, ...] = ()
    stops: tuple[StopOrder, ...] = ()
    failed: str | None = None
    stale: bool = False

    @property
    def requeued(self) -> tuple[SliceState, ...]:
        return tuple(s for s in self.slices if s.phase == "Pending")


def platform_failure(end: str, reason: str | None, cause: str | None) -> bool:
    """True when an ending is the platform's doing (not counted against maxRetries)."""
    if cause is not None:
        return cause == "platform"
    return end in ("Killed", "Lost") or (reason is not None and reason.startswith(INFRA_REASONS))


def job_phase(current: str, slices: tuple[SliceState, ...]) -> str:
    """A live job's phase from its slices' phases."""
    if current in FINAL:
        return current
    phases = [s.phase for s in slices]
    if all(p == "Succeeded" for p in phases):
        return "Succeeded"
    if any(p == "Running" for p in phases):
        return "Running"
    return "Pending"


def _requeue(sl: SliceState, now: float, delay: float) -> SliceState:
    return replace(sl, phase="Pending", epoch=sl.epoch + 1, cluster=None, not_before=now + delay)


def on_attempt_end(
    job: JobState,
    slices: tuple[SliceState, ...],
    attempt: AttemptEnd,
    end: str,
    cause: str | None,
    now: float,
    backoff: Callable[[int], float],
) -> Transition:
    """Decide what follows ``attempt``'s end (``end``: Succeeded, Failed, Killed or Lost).

    ``backoff(failures)`` is the delay before a workload failure's next try."""
    sl = next((x for x in slices if x.index == attempt.index), None)
    if sl is None or sl.epoch != attempt.epoch or sl.phase not in ACTIVE or job.phase in FINAL:
        return Transition(job, slices, stale=True)  # a stale epoch stopped, as ordered
    if end == "Succeeded":
        done = tuple(replace(x, phase="Succeeded") if x.index == sl.index else x for x in slices)
        events = [
            Event(
                "SliceSucceeded", f"slice {sl.index} exited 0", sl.index, sl.epoch, attempt.cluster
            )
        ]
        phase = job_phase(job.phase, done)
        if phase == "Succeeded":
            events.append(Event("Succeeded", "all slices succeeded"))
        return Transition(replace(job, phase=phase), done, tuple(events))

    infra = platform_failure(end, attempt.reason, cause)
    what = (
        f"exit code {attempt.exit_code}"
        if attempt.exit_code is not None
        else (attempt.reason or end)
    )
    if attempt.preempted_for:
        what = f"preempted for {attempt.preempted_for}"
    detail = f" ({attempt.reason})" if attempt.reason and attempt.exit_code is not None else ""
    events = [
        Event(
            "Preempted" if attempt.preempted_for else "SliceFailed",
            f"slice {sl.index} epoch {sl.epoch} on {attempt.cluster}: {what}{detail}",
            sl.index,
            sl.epoch,
            attempt.cluster,
        )
    ]
    if not job.gang:
        failures = sl.failures + (0 if infra else 1)
        if failures > job.max_retries:
            reason = (
                f"slice {sl.index} failed {failures} times "
                f"(maxRetries {job.max_retries}); last: {what}"
            )
            counted = tuple(
                replace(x, failures=failures) if x.index == sl.index else x for x in slices
            )
            return _failed(job, counted, events, reason, now)
        nxt = _requeue(replace(sl, failures=failures), now, 0.0 if infra else backoff(failures))
        out = tuple(nxt if x.index == sl.index else x for x in slices)
        events.append(
            Event(
                "Requeued",
                f"slice {sl.index} will run again at epoch {nxt.epoch}",
                index=sl.index,
                epoch=nxt.epoch,
            )
        )
        return Transition(replace(job, phase=job_phase(job.phase, out)), out, tuple(events))

    restarts = job.restarts + (0 if infra else 1)
    job = replace(job, restarts=restarts)
    if restarts > job.max_retries:
        reason = (
            f"gang failed {restarts} times (maxRetries {job.max_retries}); "
            f"last: slice {sl.index} {what}"
        )
        return _failed(job, slices, events, reason, now)
    delay = 0.0 if infra else backoff(restarts)
    stops = tuple(
        StopOrder(x.cluster, x.index, x.epoch, f"gang restart after slice {sl.index} failed")
        for x in slices
        if x.index != sl.index and x.phase in ACTIVE and x.cluster
    )
    out = tuple(
        _requeue(x, now, delay) if x.phase in ACTIVE or x.phase == "Pending" else x for x in slices
    )
    epoch = next(x.epoch for x in out if x.index == sl.index)
    events.append(
        Event(
            "GangRestart",
            f"restarting all {len(slices)} slices at epoch {epoch}"
            + (f" from checkpoint {job.checkpoint}" if job.checkpoint else ""),
            epoch=epoch,
        )
    )
    return Transition(replace(job, phase=job_phase(job.phase, out)), out, tuple(events), stops)


def _failed(
    job: JobState, slices: tuple[SliceState, ...], events: list[Event], reason: str, now: float
) -> Transition:
    out = tuple(x if x.phase in FINAL else replace(x, phase="Failed") for x in slices)
    events.append(Event("Failed", reason))
    return Transition(replace(job, phase="Failed"), out, tuple(events), failed=reason)
