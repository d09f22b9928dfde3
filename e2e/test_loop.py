"""The first loop, end to end: a real nats-server, the hub and three spokes as separate
processes; a 3-slice job whose slices each write a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.conftest import final, manifest, spokes, steps

pytestmark = pytest.mark.e2e


def test_a_job_runs_every_slice_exactly_once(federation, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fed = federation(spokes("eu-west", "us-east", "ap-south"))
    out = tmp_path / "out"
    with fed.client() as c:
        assert {x.name for x in c.clusters()} == {"eu-west", "us-east", "ap-south"}
        job = c.submit(
            manifest(
                "three",
                out,
                slices=3,
                args=["--steps", "3", "--step-time", "0.05", "--once-marker"],
            )
        )
        done = final(c, job.id)
        attempts = c.attempts(job.id)
    assert done.status.phase == "Succeeded", done.status.reason
    # --once-marker creates ran-<slice> exclusively: a second run of any slice would fail.
    assert sorted(p.name for p in out.glob("ran-*")) == ["ran-0", "ran-1", "ran-2"]
    assert sorted((a.index, a.epoch, a.phase) for a in attempts) == [
        (0, 1, "Succeeded"),
        (1, 1, "Succeeded"),
        (2, 1, "Succeeded"),
    ]
    # 4 GPUs per slice, 4 per cluster: three slices needed three clusters.
    assert len({a.cluster for a in attempts}) == 3
    done_lines = [r for r in steps(out) if r.get("done")]
    assert sorted(r["slice"] for r in done_lines) == [0, 1, 2]


def test_a_waiting_job_says_why(federation, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fed = federation(spokes("eu-west"))
    with fed.client() as c:
        job = c.submit(manifest("toobig", tmp_path, slices=2, gpus=4))
        from e2e.conftest import wait_for

        j = wait_for(c, job.id, lambda j: j.status.waiting is not None, 10, "a wait reason")
        assert j.status.phase == "Pending"
        assert j.status.waiting is not None
        assert j.status.waiting.summary == "needs 2 slices × 4 GPU; largest fit: eu-west 1 slice(s)"
        assert j.status.waiting.clusters == {"eu-west": "1 of 2 slices fit (4 of 4 GPU free)"}
        assert c.cancel(job.id).status.phase == "Cancelled"
