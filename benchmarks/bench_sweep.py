"""The policy grid on the whole trace: ``orrery sim --sweep benchmarks/sweep-big.yaml``
(4 fleets x 3 offered loads x 2 seeds; FIFO first fit, strict FIFO and Orrery), writing
benchmarks/results/sweep/{sweep.json,sweep.md,sweep.png}. The README quotes its table.

    ./dev bench benchmarks/bench_sweep.py
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.conftest import RESULTS, record
from orrery_hub.sim.sweep import run_sweep

GRID = Path(__file__).parent / "sweep-big.yaml"


@pytest.mark.benchmark
def test_policy_grid_on_the_whole_trace() -> None:
    out = RESULTS / "sweep"
    t0 = time.perf_counter()
    result = run_sweep(GRID, out)
    took = time.perf_counter() - t0
    print("\n" + (out / "sweep.md").read_text())
    record("sweep", {"seconds": round(took, 1), "aggregate": result["aggregate"]})
    for r in result["cells"]:
        for s in r["policies"].values():
            assert s["jobs_finished"] > 0
    # The floor, on every cell: Orrery never worse than FIFO first fit by over 5%.
    orrery = result["aggregate"]["orrery"]
    assert orrery["not_worse_cells"] == orrery["cells"], orrery["worst"]
