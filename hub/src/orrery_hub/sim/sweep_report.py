"""Figures from a sweep (``sweep.run_sweep``): per-cell ratios to the baseline, the
aggregate with the worst cell beside the best, a Markdown table and a PNG.

Verdicts (the issue's "done when"), per cell, for each policy against the baseline:

* ``not_worse``: mean JCT ≤ 1.05 × the baseline's, and mean wait ≤ 1.05 × the baseline's
  plus one pass interval (a wait of 0 s against 3 s is one pass, not "infinitely worse");
* under contention (offered load ≥ ``CONTENDED``): ``wins`` when mean wait is at least 2×
  lower, mean JCT at least 1.5× lower and Jain's index ≥ 0.9. No policy's mean JCT goes
  below the mean service time (``jct_floor``); where the baseline's is within 1.5× of it
  (``jct_reachable`` false) the JCT part reads "within 5% of the floor" instead, and the
  aggregate counts those cells apart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

CONTENDED = 0.7


def _ratio(x: float, base: float) -> float:
    return x / base if base > 0 else (1.0 if x <= 0 else math.inf)


def _geo(xs: list[float]) -> float:
    xs = [max(x, 1e-9) for x in xs if math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else 1.0


def verdict(s: dict[str, Any], b: dict[str, Any], load: float, slack: float) -> dict[str, Any]:
    jr = _ratio(s["jct_mean"], b["jct_mean"])
    wr = _ratio(s["wait_mean"], b["wait_mean"])
    not_worse = jr <= 1.05 and s["wait_mean"] <= 1.05 * b["wait_mean"] + slack
    contended = load >= CONTENDED
    floor = s.get("jct_floor", 0.0)
    # No policy beats the floor: where the baseline is within 1.5x of it, 1.5x is out of
    # reach, and the JCT part of the target becomes "within 5% of the floor".
    reachable = b["jct_mean"] >= 1.5 * floor
    jct_ok = s["jct_mean"] * 1.5 <= b["jct_mean"] or (
        not reachable and s["jct_mean"] <= 1.05 * floor)
    wins = (contended and s["wait_mean"] * 2 <= b["wait_mean"] and jct_ok
            and s["jain"] >= 0.9)
    return {"jct_ratio": round(jr, 4), "wait_ratio": round(wr, 4), "not_worse": not_worse,
            "contended": contended, "wins": wins, "jct_reachable": reachable,
            "jct_over_floor": round(_ratio(s["jct_mean"], floor), 4)}


def aggregate(rows: list[dict[str, Any]], baseline: str, slack: float) -> dict[str, Any]:
    """Per policy: geometric-mean ratios, worst and best cell, and how many cells meet
    the targets."""
    out: dict[str, Any] = {}
    policies = list(rows[0]["policies"]) if rows else []
    for p in policies:
        if p == baseline:
            continue
        vs = []
        for r in rows:
            v = verdict(r["policies"][p], r["policies"][baseline], r["offered_load"], slack)
            r.setdefault("verdicts", {})[p] = v
            vs.append((r, v))
        # Worst: the larger of the two ratios; best: the smaller.
        worst = max(vs, key=lambda rv: max(rv[1]["jct_ratio"], rv[1]["wait_ratio"]))
        best = min(vs, key=lambda rv: min(rv[1]["jct_ratio"], rv[1]["wait_ratio"]))
        cont = [(r, v) for r, v in vs if v["contended"]]
        out[p] = {
            "cells": len(vs),
            "jct_ratio_geomean": round(_geo([v["jct_ratio"] for _, v in vs]), 4),
            "wait_ratio_geomean": round(_geo([v["wait_ratio"] for _, v in vs]), 4),
            "not_worse_cells": sum(v["not_worse"] for _, v in vs),
            "contended_cells": len(cont),
            "contended_wins": sum(v["wins"] for _, v in cont),
            "contended_jct_unreachable": sum(not v["jct_reachable"] for _, v in cont),
            "jct_over_floor_max": max((v["jct_over_floor"] for _, v in vs), default=1.0),
            "jain_min_contended": min((r["policies"][p]["jain"] for r, _ in cont), default=1.0),
            "worst": {"cell": worst[0]["cell"], **worst[1]},
            "best": {"cell": best[0]["cell"], **best[1]},
            "preemptions": sum(r["policies"][p]["preemptions"] for r, _ in vs),
            "lost_gpu_seconds": round(sum(r["policies"][p]["lost_gpu_seconds"] for r, _ in vs)),
        }
    return out


def table(result: dict[str, Any]) -> str:
    base = result["baseline"]
    lines = [f"Ratios are against `{base}` (lower is better); contended: offered load "
             f"≥ {CONTENDED}.", "",
             "| policy | cells | JCT ratio (geomean) | wait ratio (geomean) | not worse "
             "| contended wins (1.5× JCT out of reach) | min Jain (contended) "
             "| worst JCT / floor | **worst cell** (JCT, wait ratio) "
             "| best cell (JCT, wait ratio) | preemptions | GPU-s lost |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p, a in result["aggregate"].items():
        w, b = a["worst"], a["best"]
        lines.append(
            f"| {p} | {a['cells']} | {a['jct_ratio_geomean']:.3f} | {a['wait_ratio_geomean']:.3f}"
            f" | {a['not_worse_cells']}/{a['cells']} | {a['contended_wins']}/"
            f"{a['contended_cells']} ({a['contended_jct_unreachable']}) "
            f"| {a['jain_min_contended']:.3f} | {a['jct_over_floor_max']:.3f} | **{w['cell']}** "
            f"({w['jct_ratio']:.2f}, {w['wait_ratio']:.2f}) | {b['cell']} ({b['jct_ratio']:.2f},"
            f" {b['wait_ratio']:.2f}) | {a['preemptions']:,} | {a['lost_gpu_seconds']:,} |")
    lines += ["", "| cell | GPUs | offered load | policy | JCT mean (s) | JCT floor (s) "
              "| JCT p99 (s) | wait mean (s) | wait p99 (s) | JCT / base | wait / base "
              "| util. (arrivals) | Jain | preemptions | GPU-s lost |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["cells"]:
        for p, s in r["policies"].items():
            v = r.get("verdicts", {}).get(p)
            ratios = (f"{v['jct_ratio']:.2f} | {v['wait_ratio']:.2f}" if v else "1 | 1")
            lines.append(
                f"| {r['cell']} | {r['gpus']} | {r['offered_load']:.2f} | {p} "
                f"| {s['jct_mean']:,.0f} | {s.get('jct_floor', 0):,.0f} | {s['jct_p99']:,.0f} "
                f"| {s['wait_mean']:,.0f} "
                f"| {s['wait_p99']:,.0f} | {ratios} | {s['utilization_arrivals']:.3f} "
                f"| {s['jain']:.3f} | {s['preemptions']} | {s['lost_gpu_seconds']:,.0f} |")
    return "\n".join(lines)


def plot_sweep(result: dict[str, Any], path: Path) -> None:
    """Per policy, each cell's mean-JCT and mean-wait ratio to the baseline against the
    offered load (log scale), the worst cell ringed in red and the best in green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pols = list(result["aggregate"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=False)
    marks = "os^Dv<>"
    for ax, metric, title in ((axes[0], "jct_ratio", "mean JCT / baseline"),
                              (axes[1], "wait_ratio", "mean wait / baseline")):
        for i, p in enumerate(pols):
            xs = [r["offered_load"] for r in result["cells"]]
            ys = [max(r["verdicts"][p][metric], 1e-3) for r in result["cells"]]
            ax.scatter(xs, ys, s=18, marker=marks[i % len(marks)], label=p, alpha=0.75)
            a = result["aggregate"][p]
            for which, colour in (("worst", "red"), ("best", "green")):
                cell = a[which]["cell"]
                r = next(r for r in result["cells"] if r["cell"] == cell)
                ax.scatter([r["offered_load"]], [max(r["verdicts"][p][metric], 1e-3)],
                           s=140, facecolors="none", edgecolors=colour, linewidths=1.4)
        ax.axhline(1.05, color="grey", linestyle="--", linewidth=0.8)
        ax.axvline(CONTENDED, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered load (GPU demand / capacity during arrivals)")
        ax.set_ylabel(title)
        ax.set_title(f"{title} (red ring: worst cell, green: best)", fontsize="medium")
        ax.legend(fontsize="small")
    if pols:
        w = result["aggregate"][pols[-1]]["worst"]
        fig.suptitle(f"worst cell for {pols[-1]}: {w['cell']} — JCT ×{w['jct_ratio']:.2f}, "
                     f"wait ×{w['wait_ratio']:.2f} of {result['baseline']}", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
