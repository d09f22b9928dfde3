"""``orrery jobs ID``: why a job waits, per cluster, grouped where many clusters agree."""

from __future__ import annotations

from rich.console import Console

from orrery.cli.views import by_reason, job_detail
from orrery.resources import JobPublic, JobStatus, Waiting


def test_a_reason_many_clusters_share_takes_one_row() -> None:
    clusters = {f"c{i:04d}": "no H100 GPUs" for i in range(1000)}
    clusters |= {"eu-west": "1 of 4 slices fit (8 of 16 H100 free)", "us-east": "cluster Lost"}
    assert by_reason(clusters) == [
        ("c0000, c0001, c0002 and 997 more", "no H100 GPUs"),
        ("eu-west", "1 of 4 slices fit (8 of 16 H100 free)"),
        ("us-east", "cluster Lost"),
    ]
    few = {"b": "x", "a": "x", "c": "y"}
    assert by_reason(few) == [("a", "x"), ("b", "x"), ("c", "y")]


def test_the_job_view_prints_the_grouped_rows() -> None:
    clusters = {f"c{i:04d}": "no H100 GPUs" for i in range(1000)}
    job = JobPublic(
        id="big-1",
        metadata={"name": "big"},
        spec={"slices": 4, "gpusPerSlice": 8},
        status=JobStatus(
            phase="Pending",
            reason="needs 4 slices × 8 H100; no allowed Ready cluster has H100 GPUs",
            waiting=Waiting(summary="needs 4 slices", clusters=clusters),
            slices=[],
            created_at=0.0,
        ),
    )
    out = Console(width=200, record=True)
    out.print(job_detail(job))
    text = out.export_text()
    assert "c0000, c0001, c0002 and 997 more" in text
    assert "c0500" not in text
