"""The service autoscaler (``orrery_hub.serving.autoscale.desired``, unchanged) replayed on
a synthetic request-rate day, against fixed replicas and a CPU-style utilisation rule:
replica-hours, latency p95/p99 and requests dropped.

    .venv/bin/python -m pytest -m benchmark benchmarks/bench_serving_sim.py -s

The trace is synthetic and seeded (``orrery_hub.sim.rates.synthetic_day``, seed 1): a
diurnal curve from 10 to 100 req/s with slow noise and bursts adding 50-150 req/s for one
to five minutes; not a measurement of a real service. The replica model
(``orrery_hub.sim.serving.Model`` defaults): 0.5 s a request, 10 at once, 20 queued, 30 s
cold start, a request given up after 30 s. The same as ``orrery sim --serving``.
"""

from __future__ import annotations

import time

import pytest

from benchmarks.conftest import record
from orrery.service_manifest import Autoscale, Replicas
from orrery_hub.sim.rates import arrivals, synthetic_day
from orrery_hub.sim.scalers import Fixed, Kpa, Scaler, Utilisation
from orrery_hub.sim.serving import Model, replay, table

SEED = 1
BOUNDS = Replicas(min=1, max=16)


def kpa(target: float) -> Kpa:
    auto = Autoscale.model_validate({"targetConcurrency": target, "stableWindow": "60s",
                                     "panicWindow": "6s", "scaleDownDelay": "300s"})
    k = Kpa(auto, BOUNDS)
    k.name = f"kpa-{target:g}"
    return k


def cpu(target: float) -> Utilisation:
    u = Utilisation(BOUNDS, target=target)
    u.name = f"cpu-{target:g}"
    return u


@pytest.mark.benchmark
def test_autoscaler_replayed_on_a_synthetic_day() -> None:
    model = Model()
    trace = synthetic_day(seed=SEED)
    arr = arrivals(trace, model.step_s, SEED)
    # 7 of 10 slots and 70% utilisation: the same headroom for both rules; 10 and 50%
    # show each rule's other trade (fewer replicas / fewer drops).
    scalers: list[Scaler] = [Fixed(16), Fixed(8), kpa(7), kpa(10), cpu(0.7), cpu(0.5)]
    rows, wall = [], {}
    for s in scalers:
        t0 = time.perf_counter()
        rows.append(replay(arr, model, s).summary())
        wall[s.name] = round(time.perf_counter() - t0, 2)
    print(f"\n{trace.source}: 24 h, {sum(arr):,} requests, {len(trace.bursts)} bursts")
    print(table(rows))
    print("wall s per replay:", wall)
    record("serving_sim", {"trace": trace.source, "requests": sum(arr), "policies": rows,
                           "wall_s": wall})
    by = {r["policy"]: r for r in rows}
    assert by["fixed-16"]["dropped"] == 0
    assert by["kpa-7"]["replica_hours"] < 0.5 * by["fixed-16"]["replica_hours"]
    assert by["kpa-7"]["dropped"] < by["cpu-0.7"]["dropped"]
