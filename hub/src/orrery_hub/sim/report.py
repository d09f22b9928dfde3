"""Figures from a simulation: ``summary.json`` per policy and a PNG comparing policies.
Called by ``cli`` and the benchmarks. matplotlib is imported only to draw, so the summary
works without the ``sim`` extra.

Definitions (all seconds or fractions):

* ``utilization``: GPU-seconds allocated / (fleet GPUs x (end - first submission));
  ``utilization_arrivals`` the same while jobs were still arriving (the contended part).
* ``jct_*``: end - submission; ``wait_*``: first start - submission; over finished jobs,
  right-censored trace rows left out. p99 is the nearest-rank percentile.
* ``jct_floor``: the mean service time of the same jobs, below which no policy's mean
  JCT can go (JCT = wait + service, and preemption only adds lost work).
* ``jain``: Jain's index of each queue's GPUs over its fair share — its guarantee, then a
  weighted max-min share of the rest, capped by its demand (Jain et al.'s normalisation
  by the fair allocation) — over queues with demand,
  time-averaged over the time when at least two queues had work waiting (1.0 when never).
* ``makespan``: last completion - first submission.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from orrery_hub.sim.engine import Result


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    k = max(0, math.ceil(p / 100 * len(s)) - 1)
    return s[k]


def summary(r: Result) -> dict[str, Any]:
    done = [(s, st, e) for s, st, e, censored in r.finished if not censored]
    jct = [e - s for s, _, e in done]
    wait = [st - s for s, st, _ in done]
    span = max(r.end - r.first_submit, 1e-9)
    arr = max(r.last_submit - r.first_submit, 1e-9)
    out: dict[str, Any] = {
        "utilization": round(r.busy_gpu_seconds / (r.gpus * span), 6),
        "utilization_arrivals": round(r.busy_gpu_seconds_arrivals / (r.gpus * arr), 6),
        "jct_mean": round(sum(jct) / len(jct), 3) if jct else 0.0,
        "jct_floor": round(r.service_seconds / len(jct), 3) if jct else 0.0,
        "jct_p99": round(percentile(jct, 99), 3),
        "wait_mean": round(sum(wait) / len(wait), 3) if wait else 0.0,
        "wait_p99": round(percentile(wait, 99), 3),
        "jain": round(r.jain_weighted / r.contended_seconds, 6) if r.contended_seconds else 1.0,
        "preemptions": r.preemptions,
        "lost_gpu_seconds": round(r.lost_gpu_seconds, 3),
        "makespan": round(r.end - r.first_submit, 3),
        "jobs_finished": len(r.finished),
        "jobs_in_stats": len(done),
        "fractional_rounded_up": r.rounded_fractional,
        "gpus": r.gpus,
        "passes": r.passes,
        "events": r.events,
    }
    if r.has_data:
        out["data_wait_gpu_hours"] = round(r.data_wait_gpu_seconds / 3600, 3)
    return out


def _series(r: Result, points: int = 2000) -> tuple[list[float], list[float]]:
    """Utilisation over time, thinned to about ``points`` steps for the plot."""
    s = r.used_series
    if not s:
        return [], []
    step = max(1, len(s) // points)
    xs = [(t - r.first_submit) / 3600 for t, _ in s[::step]]
    ys = [u / r.gpus for _, u in s[::step]]
    return xs, ys


def plot(results: list[Result], summaries: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in results:
        xs, ys = _series(r)
        ax1.step(xs, ys, where="post", label=r.policy, linewidth=0.8)
    ax1.set_xlabel("simulated time (h)")
    ax1.set_ylabel("GPUs allocated / fleet")
    ax1.set_title("GPU utilisation over time")
    ax1.legend(fontsize="small")
    names = [r.policy for r in results]
    metrics = ["jct_mean", "jct_p99", "wait_mean", "wait_p99"]
    width = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        vals = [summaries[n][m] for m in metrics]
        ax2.bar([k + i * width for k in range(len(metrics))], vals, width, label=n)
    ax2.set_xticks([k + 0.4 - width / 2 for k in range(len(metrics))], metrics)
    ax2.set_yscale("symlog")
    ax2.set_ylabel("seconds")
    ax2.set_title("completion and queueing time")
    ax2.legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
