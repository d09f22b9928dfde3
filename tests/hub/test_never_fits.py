"""A job that can never fit says so, rather than "0 of 1 slices fit" forever; and
``orrery policy check`` does not call a cluster without the job's GPU type eligible."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from orrery.cli.main import app
from orrery.ids import ClusterName, JobId, NodeName, SliceIndex
from orrery_hub.cli import policy as policycli
from orrery_hub.scheduler import ClusterCapacity, JobRequest, NodeCapacity, Snapshot, plan

REPO = Path(__file__).resolve().parents[2]


def _node(name: str, gpu_type: str, gpus: int = 8) -> NodeCapacity:
    return NodeCapacity(NodeName(name), gpu_type, gpus, tuple(range(gpus)))


def _job(gpus: int, types: list[str]) -> JobRequest:
    return JobRequest(
        id=JobId("j"),
        name="j",
        priority=0,
        seq=0,
        gpus_per_slice=gpus,
        gpu_types=frozenset(types),
        pending=(SliceIndex(0),),
        gang=True,
    )


def test_a_slice_bigger_than_any_node_can_never_fit() -> None:
    snap = Snapshot(
        clusters=(
            ClusterCapacity(
                ClusterName("eu-west"), {}, True, (_node("e0", "H100"), _node("e1", "H100"))
            ),
        ),
        jobs=(_job(64, ["H100"]),),
    )
    w = plan(snap, now=0).waiting[JobId("j")]
    assert w.summary == "needs 1 slice × 64 H100; can never fit: largest node has 8 H100"
    assert w.clusters[ClusterName("eu-west")] == "can never fit: largest node has 8 H100"


def test_a_slice_that_fits_a_busy_node_still_only_waits() -> None:
    busy = NodeCapacity(NodeName("e0"), "H100", 8, ())
    snap = Snapshot(
        clusters=(ClusterCapacity(ClusterName("eu-west"), {}, True, (busy,)),),
        jobs=(_job(8, ["H100"]),),
    )
    w = plan(snap, now=0).waiting[JobId("j")]
    assert "never" not in w.summary and "0 of 1 slices fit" in w.clusters[ClusterName("eu-west")]


CLUSTERS = {"items": [
    {"name": "eu-west", "region": "eu-west", "labels": {}, "state": "Ready",
     "nodes": 1, "gpus": {"H100": {"total": 8, "free": 8}}, "lastHeartbeat": 0.0},
    {"name": "us-east", "region": "us-east", "labels": {}, "state": "Ready",
     "nodes": 1, "gpus": {"A100": {"total": 8, "free": 8}}, "lastHeartbeat": 0.0},
]}

JOB = """\
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: t, labels: {team: research}}
spec: {queue: research, slices: 1, gpusPerSlice: 4, gpuType: H100, command: [python, t.py]}
"""


def test_policy_check_does_not_call_a_cluster_without_the_type_eligible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=CLUSTERS)

    class Fake(policycli.PolicyClient):
        def __init__(self, base_url: str, token: str | None = None) -> None:
            super().__init__(base_url, transport=httpx.MockTransport(handler), token=token)

    monkeypatch.setattr(policycli, "PolicyClient", Fake)
    f = tmp_path / "job.yaml"
    f.write_text(JOB)
    empty = tmp_path / "policies"
    empty.mkdir()
    r: Any = CliRunner().invoke(
        app,
        ["policy", "check", str(f), "--policies", str(empty), "--hub", "http://hub:1"],
        env={"COLUMNS": "200"},
    )
    assert r.exit_code == 0, r.output
    assert "eligible clusters: eu-west" in r.output
    assert "us-east: has no H100 GPUs" in r.output, r.output
