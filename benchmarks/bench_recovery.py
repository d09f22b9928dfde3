"""Time to recover, at each timing preset of ``orrery up --timing``:

- spoke loss: from SIGKILL of a spoke agent to every slice it ran Running elsewhere (the
  host is taken as dead: only the failover timeout can tell), 20 trials per preset;
- slice exit: from SIGKILL of a slice's workload to the gang Running again at the next epoch
  (no timeout involved: the spoke reports the exit at once), at the default timings.

In every trial the workload records each step it runs, and ``assert_never_twice`` checks
that no slice ran two epochs at once.

    ./dev bench -k recovery                      # all presets, 20 trials each
    ORRERY_BENCH_TRIALS=5 ./dev bench -k recovery
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml
from e2e.conftest import WORKLOAD, assert_never_twice

from benchmarks.conftest import percentile, record
from orrery.client import HubClient
from orrery.federation import Federation, SpokeSpec, Timings
from orrery.resources import JobPublic

pytestmark = pytest.mark.benchmark

TRIALS = int(os.environ.get("ORRERY_BENCH_TRIALS", "20"))
SPOKES = [SpokeSpec(n, f"{n}-1", "H100", 1, 8) for n in ("east", "west", "north")]
RUN = ["--steps", "1000000", "--step-time", "0.02", "--checkpoint-every", "50"]


def _submit(c: HubClient, name: str, out: Path) -> JobPublic:
    return c.submit(
        yaml.safe_dump(
            {
                "apiVersion": "orrery/v1",
                "kind": "TrainingJob",
                "metadata": {"name": name},
                "spec": {
                    "slices": 2,
                    "gpusPerSlice": 4,
                    "restartPolicy": "Gang",
                    "maxRetries": 5,
                    "command": [sys.executable, str(WORKLOAD), "--out", str(out), *RUN],
                },
            }
        )
    )


def _until(c: HubClient, job_id: str, ok, limit: float = 90) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while True:
        j = c.job(job_id)
        if ok(j):
            return time.monotonic()
        assert time.monotonic() - t0 < limit, j.model_dump_json()
        time.sleep(0.01)


def _figures(times: list[float], t: Timings) -> dict[str, float | int]:
    return {
        "trials": len(times),
        "heartbeat_s": t.heartbeat_s,
        "lease_s": t.lease_s,
        "kill_grace_s": t.kill_grace_s,
        "drift_s": t.drift_s,
        "failover_timeout_s": t.failover_s,
        "p50_s": round(percentile(times, 50), 2),
        "p99_s": round(percentile(times, 99), 2),
        "max_s": round(max(times), 2),
    }


@pytest.mark.parametrize("preset", ["default", "fast", "aggressive"])
def test_spoke_loss_recovery(tmp_path: Path, preset: str) -> None:
    timings = Timings.preset(preset)
    times: list[float] = []
    fed = Federation(tmp_path / "fed", spokes=SPOKES, timings=timings)
    with fed, fed.client() as c:
        for trial in range(TRIALS):
            out = tmp_path / f"out-{trial}"
            job = _submit(c, f"trial-{trial}", out)
            _until(c, job.id, lambda j: all(s.phase == "Running" for s in j.status.slices))
            victim = c.job(job.id).status.slices[0].cluster
            assert victim is not None
            t0 = time.monotonic()
            fed.kill_spoke(victim)
            t1 = _until(
                c,
                job.id,
                lambda j, v=victim: all(
                    s.phase == "Running" and s.epoch >= 2 and s.cluster != v
                    for s in j.status.slices
                ),
            )
            times.append(t1 - t0)
            c.cancel(job.id)
            _until(c, job.id, lambda j: j.final)
            fed.start_spoke(victim)
            fed.wait_ready()
            assert_never_twice(out)
    figures = _figures(times, timings) | {"preset": preset}
    record(f"recovery-{preset}", figures)
    if preset == "aggressive":
        assert figures["p50_s"] < 2.0, figures


def _workload_pid(out: Path, index: int, epoch: int, deadline: float = 30) -> int:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        path = out / "steps.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                r = json.loads(line)
                if r.get("slice") == index and r.get("epoch") == epoch and "pid" in r:
                    return int(r["pid"])
        time.sleep(0.02)
    raise AssertionError(f"slice {index} epoch {epoch} recorded no step")


def test_slice_exit_is_replaced_without_a_timeout(tmp_path: Path) -> None:
    timings = Timings()  # default: a 15 s failover timeout that recovery must not wait for
    times: list[float] = []
    fed = Federation(tmp_path / "fed", spokes=SPOKES, timings=timings)
    with fed, fed.client() as c:
        for trial in range(min(TRIALS, 10)):
            out = tmp_path / f"out-{trial}"
            job = _submit(c, f"exit-{trial}", out)
            _until(c, job.id, lambda j: all(s.phase == "Running" for s in j.status.slices))
            pid = _workload_pid(out, 0, 1)
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)  # as the OOM killer would
            t1 = _until(
                c,
                job.id,
                lambda j: all(s.phase == "Running" and s.epoch >= 2 for s in j.status.slices),
            )
            times.append(t1 - t0)
            c.cancel(job.id)
            _until(c, job.id, lambda j: j.final)
            assert_never_twice(out)
    figures = _figures(times, timings) | {"backoff_s": timings.backoff_s}
    record("recovery-slice-exit", figures)
    # Far inside the failover timeout: nothing waited for a silence to be noticed.
    assert figures["p99_s"] < timings.failover_s / 2, figures
