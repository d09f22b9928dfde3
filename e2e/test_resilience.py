"""Resilience, end to end: processes SIGKILLed mid-run; the job still succeeds, resumes
from its checkpoint, and no slice ever runs two epochs at once (checked from what the
workload itself recorded, not from what the hub believes)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from e2e.conftest import assert_never_twice, final, intervals, manifest, spokes, steps, wait_for
from orrery.federation import Timings

pytestmark = pytest.mark.e2e

RUN = ["--steps", "70", "--step-time", "0.1", "--checkpoint-every", "5"]


def test_spoke_sigkill_mid_gang_moves_the_gang_and_resumes(federation, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fed = federation(spokes("eu-west", "us-east", "ap-south"))
    out = tmp_path / "out"
    with fed.client() as c:
        job = c.submit(manifest("gang", out, slices=2, args=RUN))
        j = wait_for(
            c, job.id, lambda j: (j.status.checkpoint_step or 0) >= 9, 30, "a checkpoint at step 9"
        )
        victim = next(s.cluster for s in j.status.slices if s.index == 0)
        assert victim is not None
        fed.kill_spoke(victim)
        done = final(c, job.id, timeout=60)
        attempts = c.attempts(job.id)
        clusters = {x.name: x.state for x in c.clusters()}
    assert done.status.phase == "Succeeded", done.status.reason
    assert clusters[victim] == "Lost"
    # Both slices restarted together at epoch 2, slice 0 away from the dead cluster.
    final_epochs = {a.index: a for a in attempts if a.phase == "Succeeded"}
    assert {a.epoch for a in final_epochs.values()} == {2}
    assert final_epochs[0].cluster != victim
    assert_never_twice(out)
    resumed = {r["resumed_from"] for r in steps(out) if r.get("epoch") == 2 and "step" in r}
    assert resumed and min(resumed) >= 10, f"epoch 2 did not resume from the checkpoint: {resumed}"
    assert done.status.restarts == 0  # an infrastructure failure does not use up retries


def test_hub_sigkill_and_restart_loses_nothing_and_restarts_nothing(
    federation, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # Slices outlive a hub restart while their lease holds, so the lease must be longer than
    # the hub takes to come back: ~2 s on a quiet machine, importing SQLAlchemy included, but
    # over 5 s was seen beside other work. Production's 10 s lease is what this test uses; with
    # the 2 s test lease they would, rightly, be stopped.
    slow = Timings(
        heartbeat_s=0.25, lease_s=10.0, failover_s=13.0, kill_grace_s=0.5, backoff_s=0.1
    )
    fed = federation(spokes("eu-west", "us-east"), timings=slow)
    out = tmp_path / "out"
    with fed.client() as c:
        job = c.submit(manifest("survivor", out, slices=2, args=RUN))
        wait_for(c, job.id, lambda j: j.status.phase == "Running", 20, "Running")
    fed.kill_hub()
    fed.start_hub()
    with fed.client() as c:
        assert job.id in [j.id for j in c.jobs()]
        done = final(c, job.id, timeout=60)
        attempts = c.attempts(job.id)
    assert done.status.phase == "Succeeded", done.status.reason
    # The slices kept running under their lease: one attempt each, never restarted.
    assert sorted((a.index, a.epoch) for a in attempts) == [(0, 1), (1, 1)]
    assert set(intervals(out)[0]) == {1} and set(intervals(out)[1]) == {1}


def test_nats_kill_and_restart_mid_run(federation, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fed = federation(spokes("eu-west", "us-east", "ap-south"))
    out = tmp_path / "out"
    with fed.client() as c:
        job = c.submit(manifest("natsy", out, slices=2, args=RUN))
        wait_for(c, job.id, lambda j: (j.status.checkpoint_step or 0) >= 4, 20, "a checkpoint")
        assert fed.nats is not None
        fed.nats.kill()
        fed.nats.start()
        done = final(c, job.id, timeout=60)
    assert done.status.phase == "Succeeded", done.status.reason
    assert_never_twice(out)
    assert {r["slice"] for r in steps(out) if r.get("done")} == {0, 1}


def test_retries_are_exhausted_with_backoff_and_exit_codes_recorded(
    federation, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    fed = federation(spokes("eu-west"))
    out = tmp_path / "out"
    with fed.client() as c:
        job = c.submit(
            manifest(
                "doomed", out, slices=1, max_retries=2, restart="Slice", args=["--fail-code", "3"]
            )
        )
        done = final(c, job.id, timeout=30)
        events = c.events(job.id)
        attempts = c.attempts(job.id)
    assert done.status.phase == "Failed"
    assert done.status.reason is not None and "maxRetries 2" in done.status.reason
    failures = [e for e in events if e.kind == "SliceFailed"]
    assert len(failures) == 3
    assert all("exit code 3" in e.message for e in failures)
    assert [(a.epoch, a.exit_code) for a in attempts] == [(1, 3), (2, 3), (3, 3)]
    # Backoff: each retry started no sooner than the previous attempt ended.
    for prev, nxt in pairwise(attempts):
        assert prev.ended_at is not None and nxt.assigned_at >= prev.ended_at - 0.5


def test_a_spoke_restarted_within_its_lease_adopts_its_slices(federation, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The restarted agent must renew the lease before it lapses: give it production's 10 s,
    # well above an agent's start-up (~1 s quiet; a 5 s lease was seen to lapse under the
    # suite's load, and the slice ran again at epoch 2).
    slow = Timings(heartbeat_s=0.25, lease_s=10.0, failover_s=14.0, kill_grace_s=0.5,
                   backoff_s=0.1)  # fmt: skip
    fed = federation(spokes("eu-west", "us-east"), timings=slow)
    out = tmp_path / "out"
    with fed.client() as c:
        job = c.submit(manifest("adoptee", out, slices=1, args=RUN))
        j = wait_for(c, job.id, lambda j: j.status.phase == "Running", 20, "Running")
        home = j.status.slices[0].cluster
        assert home is not None
        fed.kill_spoke(home)
        fed.start_spoke(home)  # back well within the 10 s lease
        done = final(c, job.id, timeout=60)
        attempts = c.attempts(job.id)
    assert done.status.phase == "Succeeded", done.status.reason
    # Adopted, not restarted: one attempt, one epoch, one process all along.
    assert [(a.epoch, a.cluster, a.phase) for a in attempts] == [(1, home, "Succeeded")]
    pids = {r["pid"] for r in steps(out) if "pid" in r}
    assert len(pids) == 1
