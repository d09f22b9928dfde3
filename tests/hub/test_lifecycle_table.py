"""The slice lifecycle as tables: one row per ending, what the slices and the job become.

``orrery_hub.lifecycle.on_attempt_end`` is what both the hub (reconcile) and the
simulator call; these rows pin its decisions with no store, NATS or clock."""

from __future__ import annotations

import pytest

from orrery_hub.lifecycle import (
    AttemptEnd,
    JobState,
    SliceState,
    Transition,
    on_attempt_end,
    platform_failure,
)

NOW = 1000.0


def backoff(failures: int) -> float:
    return 10.0 * failures  # deterministic: the hub jitters, the table does not


def gang(
    n: int, phase: str = "Running", *, restarts: int = 0, retries: int = 3
) -> tuple[JobState, tuple[SliceState, ...]]:
    """A gang of ``n`` slices at epoch 0, all in ``phase`` on cluster c1."""
    job = JobState(
        "j",
        "Running" if phase == "Running" else "Pending",
        gang=True,
        max_retries=retries,
        restarts=restarts,
    )
    return job, tuple(SliceState(i, phase, 0, cluster="c1") for i in range(n))


def per_slice(
    n: int, *, failures: int = 0, retries: int = 3
) -> tuple[JobState, tuple[SliceState, ...]]:
    job = JobState("j", "Running", gang=False, max_retries=retries)
    return job, tuple(
        SliceState(i, "Running", 0, failures=failures, cluster="c1") for i in range(n)
    )


def end(
    job: JobState,
    slices: tuple[SliceState, ...],
    phase: str,
    *,
    index: int = 0,
    epoch: int = 0,
    exit_code: int | None = None,
    reason: str | None = None,
    cause: str | None = None,
    preempted_for: str | None = None,
) -> Transition:
    a = AttemptEnd(index, epoch, "c1", exit_code, reason, preempted_for)
    return on_attempt_end(job, slices, a, phase, cause, NOW, backoff)


# (case, restart policy and size, ending, cause, expected slice phases, epochs,
#  job phase, restarts/failures counted, earliest next start)
GANG_ROWS = [
    (
        "success of one of two",
        2,
        "Succeeded",
        None,
        ("Succeeded", "Running"),
        (0, 0),
        "Running",
        0,
        None,
    ),
    (
        "workload failure restarts the gang",
        2,
        "Failed",
        "workload",
        ("Pending", "Pending"),
        (1, 1),
        "Pending",
        1,
        NOW + 10.0,
    ),
    (
        "platform failure requeues at once, no retry used",
        2,
        "Failed",
        "platform",
        ("Pending", "Pending"),
        (1, 1),
        "Pending",
        0,
        NOW,
    ),
    (
        "killed by the spoke (old spoke: no cause) is the platform's",
        2,
        "Killed",
        None,
        ("Pending", "Pending"),
        (1, 1),
        "Pending",
        0,
        NOW,
    ),
    ("lost is the platform's", 1, "Lost", None, ("Pending",), (1,), "Pending", 0, NOW),
]


@pytest.mark.parametrize(
    ("case", "n", "phase", "cause", "phases", "epochs", "job_phase", "restarts", "not_before"),
    GANG_ROWS,
    ids=[r[0] for r in GANG_ROWS],
)
def test_gang_endings(
    case: str,
    n: int,
    phase: str,
    cause: str | None,
    phases: tuple[str, ...],
    epochs: tuple[int, ...],
    job_phase: str,
    restarts: int,
    not_before: float | None,
) -> None:
    job, slices = gang(n)
    t = end(job, slices, phase, exit_code=1 if phase == "Failed" else None, cause=cause)
    assert tuple(s.phase for s in t.slices) == phases
    assert tuple(s.epoch for s in t.slices) == epochs
    assert t.job.phase == job_phase
    assert t.job.restarts == restarts
    if not_before is not None:
        assert all(s.not_before == not_before for s in t.requeued)
    assert t.failed is None


def test_a_gang_restart_stops_the_other_running_slices() -> None:
    job, slices = gang(3)
    t = end(job, slices, "Failed", index=1, exit_code=2, cause="workload")
    assert {(s.index, s.epoch) for s in t.stops} == {(0, 0), (2, 0)}
    assert [e.kind for e in t.events] == ["SliceFailed", "GangRestart"]
    assert "exit code 2" in t.events[0].message


def test_a_gang_fails_past_max_retries_and_keeps_finished_slices() -> None:
    job, slices = gang(2, restarts=3, retries=3)
    slices = (slices[0], SliceState(1, "Succeeded", 0, cluster="c1"))
    t = end(job, slices, "Failed", exit_code=1, cause="workload")
    assert t.job.phase == "Failed" and t.job.restarts == 4
    assert t.failed is not None and "gang failed 4 times (maxRetries 3)" in t.failed
    assert tuple(s.phase for s in t.slices) == ("Failed", "Succeeded")
    assert [e.kind for e in t.events] == ["SliceFailed", "Failed"]


def test_platform_failures_never_exhaust_retries() -> None:
    job, slices = gang(1, restarts=3, retries=3)
    t = end(job, slices, "Killed", reason="lease lapsed")
    assert t.failed is None and t.job.restarts == 3


# restartPolicy Slice: only the slice that ended restarts, counting its own failures.
SLICE_ROWS = [
    ("first failure", 0, "Failed", "workload", "Pending", 1, 1, None),
    ("platform", 2, "Lost", None, "Pending", 1, 2, None),
    (
        "past max retries",
        3,
        "Failed",
        "workload",
        "Failed",
        0,
        4,
        "slice 0 failed 4 times (maxRetries 3); last: exit code 1",
    ),
]


@pytest.mark.parametrize(
    ("case", "failures", "phase", "cause", "slice_phase", "epoch", "counted", "failed"),
    SLICE_ROWS,
    ids=[r[0] for r in SLICE_ROWS],
)
def test_slice_endings(
    case: str,
    failures: int,
    phase: str,
    cause: str | None,
    slice_phase: str,
    epoch: int,
    counted: int,
    failed: str | None,
) -> None:
    job, slices = per_slice(2, failures=failures)
    t = end(job, slices, phase, exit_code=1 if phase == "Failed" else None, cause=cause)
    assert t.slices[0].phase == slice_phase
    assert t.slices[0].epoch == epoch
    assert t.slices[0].failures == counted
    if failed is None:
        assert t.slices[1] == slices[1]  # the other slice runs on
    else:
        assert t.slices[1].phase == "Failed"  # the job failed: nothing of it runs on
    assert t.failed == failed
    assert not t.stops


def test_all_slices_succeeded_is_a_succeeded_job() -> None:
    job, slices = gang(2)
    slices = (SliceState(0, "Succeeded", 0, cluster="c1"), slices[1])
    t = end(job, slices, "Succeeded", index=1)
    assert t.job.phase == "Succeeded"
    assert [e.kind for e in t.events] == ["SliceSucceeded", "Succeeded"]


@pytest.mark.parametrize(
    ("slice_phase", "slice_epoch", "job_phase"),
    [("Running", 1, "Running"), ("Pending", 0, "Pending"), ("Running", 0, "Cancelled")],
    ids=["older epoch", "slice not active", "job already final"],
)
def test_stale_endings_change_nothing(slice_phase: str, slice_epoch: int, job_phase: str) -> None:
    job = JobState("j", job_phase)
    slices = (SliceState(0, slice_phase, slice_epoch, cluster="c1"),)
    t = end(job, slices, "Failed", exit_code=1, cause="workload")
    assert t.stale and t.slices == slices and t.job == job and not t.events


def test_a_preempted_attempt_says_for_whom_and_is_requeued_at_once() -> None:
    job, slices = gang(1)
    t = end(job, slices, "Killed", preempted_for="urgent-1", reason="preempted")
    assert t.events[0].kind == "Preempted"
    assert "preempted for urgent-1" in t.events[0].message
    assert t.slices[0].not_before == NOW and t.job.restarts == 0


@pytest.mark.parametrize(
    ("phase", "reason", "cause", "platform"),
    [
        ("Failed", "exit 1", "workload", False),
        ("Failed", None, "platform", True),
        ("Killed", None, None, True),
        ("Lost", None, None, True),
        ("Failed", "gpus busy: 0,1", None, True),
        ("Failed", "OOM", None, False),
        ("Killed", None, "workload", False),
    ],
)
def test_platform_or_workload(
    phase: str, reason: str | None, cause: str | None, platform: bool
) -> None:
    assert platform_failure(phase, reason, cause) is platform
