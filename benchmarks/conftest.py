"""Benchmarks print their figures and append them to benchmarks/results/ (not in git); the
README quotes the latest run. Run with ``./dev bench`` (or pytest -m benchmark benchmarks/)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def pytest_addoption(parser: Any) -> None:
    parser.addoption(
        "--sim-trace",
        dest="sim_trace",
        default=None,
        help="bench_sim: the pod list CSV to replay (default: the whole trace in tests/data)",
    )


def record(name: str, figures: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    entry = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": platform.node(),
        "cpus": __import__("os").cpu_count(),
        **figures,
    }
    with open(RESULTS / f"{name}.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
    print(f"\n[{name}] " + json.dumps(figures, indent=2))


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]
