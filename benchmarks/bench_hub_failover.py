"""Hub failover time: from SIGKILL of the leader hub to the standby committing a write (a
job submission answered 201), two hubs on PostgreSQL at the default timings (leader lease
3 s), over 20 trials. After each trial the killed hub comes back and stands by.

    ./dev bench -k hub_failover
    ORRERY_BENCH_TRIALS=5 ./dev bench -k hub_failover
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import scratch_pg

from benchmarks.conftest import percentile, record
from orrery.federation import Federation, SpokeSpec, Timings

pytestmark = pytest.mark.benchmark

TRIALS = int(os.environ.get("ORRERY_BENCH_TRIALS", "20"))
JOB = (
    "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: probe}\n"
    "spec: {slices: 1, gpusPerSlice: 1, command: ['true']}\n"
)


def _commit(url: str, token: str, limit: float = 60) -> float:
    """Submit until ``url`` accepts (a standby answers 503 until it leads); when it did."""
    t0 = time.monotonic()
    with httpx.Client(headers={"authorization": f"Bearer {token}"}, timeout=5) as http:
        while True:
            try:
                r = http.post(
                    f"{url}/v1/jobs", content=JOB, headers={"content-type": "application/yaml"}
                )
                if r.status_code == 201:
                    return time.monotonic()
                assert r.status_code == 503, r.text
            except httpx.TransportError:
                pass
            assert time.monotonic() - t0 < limit, "the standby never took over"
            time.sleep(0.02)


def test_hub_failover(tmp_path: Path) -> None:
    timings = Timings()
    times: list[float] = []
    with scratch_pg() as db:
        fed = Federation(
            tmp_path / "fed",
            spokes=[SpokeSpec("east", "east-1", "H100", 1, 8)],
            timings=timings,
            hubs=2,
            db_url=db,
        )
        with fed:
            for _ in range(TRIALS):
                leader = fed.wait_leader()
                standby = 1 - leader
                fed.kill_hub(leader)
                t0 = time.monotonic()
                times.append(_commit(fed.api_urls[standby], fed.admin_token) - t0)
                fed.start_hub(leader)
                assert fed.role(leader) == "standby"
    figures = {
        "trials": len(times),
        "leader_lease_s": fed.leader_lease_s,
        "spoke_lease_s": timings.lease_s,
        "p50_s": round(percentile(times, 50), 2),
        "p99_s": round(percentile(times, 99), 2),
        "max_s": round(max(times), 2),
    }
    record("hub-failover", figures)
    # Within the spokes' lease: no slice stops while the hubs hand over.
    assert figures["max_s"] < timings.lease_s, figures
