"""End-to-end harness: real processes (nats-server, the hub, spoke agents) started by
``orrery.federation.Federation``; tests SIGKILL and restart them and then check, from what
the workloads themselves recorded, that nothing was lost and nothing ran twice."""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

from orrery.client import HubClient
from orrery.federation import Federation, SpokeSpec, Timings
from orrery.resources import JobPublic

WORKLOAD = Path(__file__).parent / "workloads" / "steps.py"
TIMINGS = Timings(heartbeat_s=0.25, lease_s=2.0, failover_s=3.5, kill_grace_s=0.5, backoff_s=0.1)


def spokes(*names: str, gpu: str = "H100", nodes: int = 1, per: int = 4) -> list[SpokeSpec]:
    return [SpokeSpec(n, f"{n}-1", gpu, nodes, per) for n in names]


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Callable[..., Federation]]:
    started: list[Federation] = []

    def start(specs: list[SpokeSpec], **kw: Any) -> Federation:
        fed = Federation(tmp_path / "fed", spokes=specs, timings=kw.pop("timings", TIMINGS), **kw)
        started.append(fed)
        return fed.start()

    yield start
    for fed in started:
        fed.stop()


def manifest(
    name: str,
    out: Path,
    *,
    slices: int,
    gpus: int = 4,
    restart: str = "Gang",
    max_retries: int = 3,
    args: list[str] | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "TrainingJob",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {
                "slices": slices,
                "gpusPerSlice": gpus,
                "restartPolicy": restart,
                "maxRetries": max_retries,
                "command": [sys.executable, str(WORKLOAD), "--out", str(out), *(args or [])],
            },
        }
    )


def wait_for(
    c: HubClient, job_id: str, pred: Callable[[JobPublic], bool], timeout: float, what: str
) -> JobPublic:
    deadline = time.monotonic() + timeout
    while True:
        j = c.job(job_id)
        if pred(j):
            return j
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; job is {j.model_dump_json()}")
        time.sleep(0.1)


def final(c: HubClient, job_id: str, timeout: float = 60) -> JobPublic:
    return wait_for(c, job_id, lambda j: j.final, timeout, "the job to end")


def steps(out: Path) -> list[dict[str, Any]]:
    path = out / "steps.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def intervals(out: Path) -> dict[int, dict[int, tuple[float, float]]]:
    """slice -> epoch -> (first, last) time a step of it was recorded."""
    spans: dict[int, dict[int, list[float]]] = defaultdict(dict)
    for r in steps(out):
        span = spans[r["slice"]].setdefault(r["epoch"], [r["t"], r["t"]])
        span[0], span[1] = min(span[0], r["t"]), max(span[1], r["t"])
    return {s: {e: (a, b) for e, (a, b) in by.items()} for s, by in spans.items()}


def assert_never_twice(out: Path) -> None:
    """For each slice index, the run intervals of its epochs never overlap in time."""
    for index, by_epoch in intervals(out).items():
        ordered = sorted(by_epoch.items())
        for (e1, (_, end1)), (e2, (start2, _)) in pairwise(ordered):
            assert end1 < start2, (
                f"slice {index}: epoch {e1} ran until {end1:.3f}, epoch {e2} started {start2:.3f}"
            )
