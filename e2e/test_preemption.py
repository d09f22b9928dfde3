"""Preemption end to end: a high-priority job arrives on a full cluster; the low-priority
job running there gets a grace period, stops, is requeued (not failed), and resumes from its
checkpoint once the GPUs are free again — and the two never share GPUs at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from e2e.conftest import WORKLOAD, assert_never_twice, final, intervals, spokes, steps, wait_for

pytestmark = pytest.mark.e2e


def job(name: str, out: Path, *, priority: int, steps_: int) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {
                "priority": priority,
                "gpusPerSlice": 4,
                "maxRuntime": "10m",
                "command": [
                    "python",
                    str(WORKLOAD),
                    "--out",
                    str(out),
                    "--steps",
                    str(steps_),
                    "--step-time",
                    "0.1",
                    "--checkpoint-every",
                    "5",
                ],
            },
        }
    )


def test_a_higher_priority_job_preempts_and_the_victim_resumes(federation, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fed = federation(
        spokes("solo"), hub_args=["--preemption-grace", "1", "--preemption-min-run", "0.5"]
    )
    low_out, high_out = tmp_path / "low", tmp_path / "high"
    with fed.client() as c:
        low = c.submit(job("low", low_out, priority=0, steps_=50))
        wait_for(c, low.id, lambda j: (j.status.checkpoint_step or 0) >= 9, 30, "a checkpoint")
        high = c.submit(job("high", high_out, priority=100, steps_=10))
        assert final(c, high.id, timeout=60).status.phase == "Succeeded"
        done = final(c, low.id, timeout=90)
        low_attempts = c.attempts(low.id)
        events = [e.kind for e in c.events(low.id)]
    assert done.status.phase == "Succeeded", done.status.reason
    assert done.status.restarts == 0  # requeued, not failed: no retry used
    assert [(a.epoch, a.phase) for a in low_attempts] == [(1, "Killed"), (2, "Succeeded")]
    assert "Preempting" in events and "Preempted" in events
    # The high-priority job started only after the victim's epoch 1 had stopped, and the
    # victim came back only after the high-priority job was done.
    low_spans = intervals(low_out)[0]
    high_span = intervals(high_out)[0][1]
    assert low_spans[1][1] < high_span[0]
    assert high_span[1] < low_spans[2][0]
    assert_never_twice(low_out)
    resumed = {r["resumed_from"] for r in steps(low_out) if r.get("epoch") == 2 and "step" in r}
    assert min(resumed) >= 10, resumed
