"""The simulator on the real trace: throughput (events per second replaying the whole
Alibaba GPU trace, 8,152 rows) and the quality of each policy against FIFO (mean JCT and
queueing-delay ratios, utilisation, Jain's index), on the fleet in
tests/data/fleet-5pct.yaml (5% of the trace's nodes, arrivals 16x faster).

    .venv/bin/python -m pytest -m benchmark benchmarks/bench_sim.py -s [--sim-trace CSV]

The trace is the argument ``--sim-trace`` (or ``ORRERY_TRACE``); by default the whole
trace the repository ships, tests/data/openb_pod_list_gpuspec33.csv (research/study use,
cite Weng et al., ATC'23). A path is read from where pytest runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from benchmarks.conftest import record
from orrery_hub.sim.engine import simulate
from orrery_hub.sim.fleet import load_fleet
from orrery_hub.sim.report import summary
from orrery_hub.sim.trace import read_pods

DATA = Path(__file__).parent.parent / "tests" / "data"
WHOLE = DATA / "openb_pod_list_gpuspec33.csv"
POLICIES = ("fifo", "priority", "fair", "orrery")


def _trace(config: pytest.Config) -> tuple[Path, str]:
    given = config.getoption("sim_trace", default=None) or os.environ.get("ORRERY_TRACE")
    path = Path(given) if given else WHOLE
    if not path.is_file():
        pytest.fail(f"--sim-trace: {path}: no such file")
    return path, ("whole trace" if path.resolve() == WHOLE.resolve() else str(path))


@pytest.mark.benchmark
def test_replay_throughput_and_quality(pytestconfig: pytest.Config) -> None:
    path, what = _trace(pytestconfig)
    tr = read_pods(path)
    fleet = load_fleet(DATA / "fleet-5pct.yaml", path)
    rows = {}
    for p in POLICIES:
        t0 = time.perf_counter()
        r = simulate(tr.jobs, fleet, p)
        dt = time.perf_counter() - t0
        s = summary(r)
        s["seconds"] = round(dt, 2)
        s["events_per_s"] = round(r.events / dt)
        rows[p] = s
    base = rows["fifo"]
    lines = [
        f"{what}: {len(tr.jobs):,} GPU jobs replayed, {fleet.gpus} GPUs "
        f"(skipped rows: {tr.skipped})",
        "| policy | JCT mean (s) | JCT p99 (s) | wait mean (s) | wait p99 (s) | JCT / FIFO "
        "| wait / FIFO | util. (arrivals) | util. (all) | Jain | preemptions | makespan (s) "
        "| events/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p, s in rows.items():
        lines.append(
            f"| {p} | {s['jct_mean']:,.0f} | {s['jct_p99']:,.0f} | {s['wait_mean']:,.0f} "
            f"| {s['wait_p99']:,.0f} | {s['jct_mean'] / base['jct_mean']:.2f} "
            f"| {s['wait_mean'] / max(base['wait_mean'], 1e-9):.2f} "
            f"| {s['utilization_arrivals']:.3f} | {s['utilization']:.4f} | {s['jain']:.3f} "
            f"| {s['preemptions']} | {s['makespan']:,.0f} | {s['events_per_s']:,} |"
        )
    print("\n" + "\n".join(lines))
    record("sim", {"trace": what, "policies": rows})
    assert all(s["jobs_finished"] == len(tr.jobs) for s in rows.values())


@pytest.mark.benchmark
def test_replay_at_heavy_load(tmp_path: Path, pytestconfig: pytest.Config) -> None:
    """The whole trace at 100x arrivals on the 310-GPU fleet: the queue runs hundreds deep
    for most of the replay. Finishes in tens of seconds (it never ended before passes due
    at a rounded instant were fixed in ``sim/engine.py``)."""
    path, what = _trace(pytestconfig)
    tr = read_pods(path)
    text = (DATA / "fleet-5pct.yaml").read_text()
    heavy = tmp_path / "fleet-100x.yaml"
    heavy.write_text(
        text.replace(
            "nodes: openb_node_list_gpu_node.csv", f"nodes: {DATA / 'openb_node_list_gpu_node.csv'}"
        ).replace("arrival_scale: 16", "arrival_scale: 100")
    )
    fleet = load_fleet(heavy, path)
    assert fleet.spec.arrival_scale == 100
    t0 = time.perf_counter()
    r = simulate(tr.jobs, fleet, "orrery")
    dt = time.perf_counter() - t0
    figures = {
        "trace": what,
        "jobs": len(tr.jobs),
        "gpus": fleet.gpus,
        "arrival_scale": 100,
        "seconds": round(dt, 1),
        "events": r.events,
        "events_per_s": round(r.events / dt),
        "passes": r.passes,
        "preemptions": r.preemptions,
    }
    record("sim_heavy", figures)
    assert len(r.finished) == len(tr.jobs)
