"""``orrery sim --sweep FILE``: every policy on a grid of fleets, loads and seeds, so a
policy is judged on settings it was not tuned to. Called by ``cli`` and
``benchmarks/bench_sweep.py``; figures by ``sweep_report``.

A cell is (fleet, load, seed). Fleets are drawn from the node list: a fraction of the
nodes, GPU models grouped into clusters (``model``: one per model; ``family``: the V100s
together; ``mixed-N``: models dealt into N clusters, so a cluster holds several types;
``one``: a single cluster), each split into ``regions`` clusters, and QoS queues with one
of the guarantee templates in ``QUEUE_TEMPLATES``. A load is the *offered* load rho —
the GPU-seconds all arrivals ask for over the fleet's GPU-seconds in the arrival window —
which does not depend on the policy and is linear in the arrival scale. The seed draws
other nodes and other synthetic teams.

```yaml
trace: openb_pod_list_gpuspec33.slice2000.csv   # relative to this file
nodes: openb_node_list_gpu_node.csv             # default: beside the trace
limit: null
fleets:
  - {name: fam5, node_fraction: 0.05, grouping: family, queues: qos}
  - {name: mix3x2, node_fraction: 0.03, grouping: mixed-3, regions: 2, queues: qos-alt}
loads: [0.3, 0.7, 1.2]
seeds: [0, 1]
policies: [fifo, strict-fifo, orrery]
baseline: fifo
workers: 1
```
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orrery.document import load_document
from orrery.textfile import read_text
from orrery_hub.sim.engine import POLICIES, simulate
from orrery_hub.sim.fleet import (
    DEFAULT_NODES,
    ClusterSpec,
    Fleet,
    FleetSpec,
    QueueSpec,
    build_fleet,
)
from orrery_hub.sim.report import summary
from orrery_hub.sim.trace import TraceError, TraceJob, TraceNode, read_nodes, read_pods

# Guarantee templates: (queue, weight, share of the fleet's GPUs, priority). ``qos`` is
# tests/data/fleet-5pct.yaml's split; ``qos-alt`` the "other guarantees"; ``none``
# the QoS classes as plain queues (priorities, no quota).
QUEUE_TEMPLATES: dict[str, tuple[tuple[str, float, float | None, int], ...]] = {
    "qos": (("LS", 2, 0.55, 10), ("Guaranteed", 2, 0.025, 10), ("Burstable", 1, 0.025, 5),
            ("BE", 1, 0.40, 0)),
    "qos-alt": (("LS", 1, 0.30, 10), ("Guaranteed", 1, 0.10, 10), ("Burstable", 1, 0.20, 5),
                ("BE", 1, 0.40, 0)),
    "none": (("LS", 1, None, 10), ("Guaranteed", 1, None, 10), ("Burstable", 1, None, 5),
             ("BE", 1, None, 0)),
}
FAMILIES = {"V100M16": "v100", "V100M32": "v100"}


class FleetVariant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    node_fraction: float = Field(gt=0, le=1)
    grouping: str = "family"
    regions: int = Field(default=1, ge=1)
    queues: str = "qos"

    @field_validator("grouping")
    @classmethod
    def _grouping(cls, v: str) -> str:
        if v in ("model", "family", "one"):
            return v
        head, _, n = v.partition("-")
        if head == "mixed" and n.isdigit() and int(n) >= 1:
            return v
        raise ValueError("grouping must be model, family, one or mixed-N")

    @field_validator("queues")
    @classmethod
    def _queues(cls, v: str) -> str:
        if v not in QUEUE_TEMPLATES:
            raise ValueError(f"queues must be one of {', '.join(QUEUE_TEMPLATES)}")
        return v


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trace: str
    nodes: str | None = None
    limit: int | None = Field(default=None, ge=1)
    fleets: list[FleetVariant] = Field(min_length=1)
    loads: list[float] = Field(min_length=1)
    seeds: list[int] = Field(default=[0], min_length=1)
    policies: list[str] = Field(default=["fifo", "strict-fifo", "orrery"], min_length=1)
    baseline: str = "fifo"
    checkpoint_interval: float = Field(default=1800.0, gt=0)
    runtime_slack: float = Field(default=1.0, ge=1)
    pass_interval: float = Field(default=10.0, ge=0)
    grace: float = Field(default=30.0, ge=0)
    teams: int = Field(default=8, ge=1)
    workers: int = Field(default=1, ge=1)

    @field_validator("loads")
    @classmethod
    def _loads(cls, v: list[float]) -> list[float]:
        if any(x <= 0 for x in v):
            raise ValueError("every load must be > 0")
        return v

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in POLICIES]
        if bad:
            raise ValueError(f"unknown policy {bad[0]!r}; known: {', '.join(POLICIES)}")
        return v


@dataclass(frozen=True, slots=True)
class Cell:
    fleet: FleetVariant
    load: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.fleet.name}/load{self.load:g}/seed{self.seed}"


def load_sweep(path: Path) -> tuple[SweepSpec, Path, Path]:
    """The sweep file, and the trace and node list it names. Raises TraceError naming the
    bad field."""
    # One line per mistake, as for a manifest: NotFound, or the line of bad YAML.
    raw = load_document(read_text(path, what="sweep file"), source=str(path)) or {}
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise TraceError(f"{path}: {loc or '<document>'}: {first['msg']}") from None
    trace = path.parent / spec.trace
    nodes = path.parent / spec.nodes if spec.nodes else trace.parent / DEFAULT_NODES
    if spec.baseline not in spec.policies:
        raise TraceError(f"{path}: baseline: {spec.baseline!r} is not among the policies")
    return spec, trace, nodes


def cells(spec: SweepSpec) -> Iterator[Cell]:
    for f in spec.fleets:
        for load in spec.loads:
            for seed in spec.seeds:
                yield Cell(f, load, seed)


def _groups(v: FleetVariant, models: list[str]) -> list[ClusterSpec]:
    if v.grouping == "model":
        named = {m: m.lower() for m in models}
    elif v.grouping == "family":
        named = {m: FAMILIES.get(m, m.lower()) for m in models}
    elif v.grouping == "one":
        named = dict.fromkeys(models, "all")
    else:  # mixed-N: models dealt round-robin, so clusters hold several types
        n = int(v.grouping.split("-")[1])
        named = {m: f"mix{i % n}" for i, m in enumerate(models)}
    by: dict[str, list[str]] = defaultdict(list)
    for m, g in named.items():
        by[g].append(m)
    return [ClusterSpec(name=g, models=ms) for g, ms in sorted(by.items())]


def make_fleet(spec: SweepSpec, cell: Cell, nodes: tuple[TraceNode, ...], scale: float) -> Fleet:
    v = cell.fleet
    models = sorted({n.model for n in nodes})
    base = FleetSpec(node_fraction=v.node_fraction, clusters=_groups(v, models), seed=cell.seed,
                     arrival_scale=scale, checkpoint_interval=spec.checkpoint_interval,
                     runtime_slack=spec.runtime_slack, pass_interval=spec.pass_interval,
                     grace=spec.grace, teams=spec.teams)
    fleet = build_fleet(base, nodes)  # first without queues: their quotas need the size
    gpus = fleet.gpus
    queues = []
    for name, weight, share, prio in QUEUE_TEMPLATES[v.queues]:
        g = None if share is None else max(1, round(gpus * share))
        queues.append(QueueSpec(name=name, weight=weight, guaranteed=g,
                                cohort=None if share is None else "prod", priority=prio))
    fleet = build_fleet(base.model_copy(update={"queues": queues}), nodes)
    if v.regions > 1:  # split each cluster's nodes round-robin into regions
        split: dict[str, tuple[TraceNode, ...]] = {}
        for c, ns in fleet.clusters.items():
            for r in range(v.regions):
                part = ns[r :: v.regions]
                if part:
                    split[f"{c}-r{r}"] = part
        fleet = Fleet(split, fleet.queues, fleet.priorities, fleet.spec)
    return fleet


def offered_load(jobs: tuple[TraceJob, ...], gpus: int, scale: float) -> float:
    """The textbook offered load, rho = arrival rate x mean GPU-seconds per job / GPUs: all
    the GPU-seconds the arrivals ask for over the fleet's GPU-seconds in the arrival window
    at ``scale``. Each job counts whole, even when it runs past the window: on this trace
    90% of the GPU-seconds lie in 77 jobs longer than a day, and they hold their GPUs that
    long whatever the window (counting only the part inside the window, as the first
    sweep did, put cells where FIFO waited 36 hours at "0.3")."""
    if not jobs or gpus <= 0:
        return 0.0
    window = max((jobs[-1].submit - jobs[0].submit) / scale, 1e-9)
    return sum(j.gpus * j.duration for j in jobs) / (gpus * window)


def scale_for(jobs: tuple[TraceJob, ...], gpus: int, load: float) -> float:
    """The arrival scale at which the offered load is ``load`` (it is linear in the scale)."""
    at_one = offered_load(jobs, gpus, 1.0)
    if at_one <= 0:
        raise TraceError("the trace asks for no GPU-seconds: no arrival scale gives a load")
    return load / at_one


@cache
def _inputs(trace: str, nodes: str, limit: int | None) -> tuple[tuple[TraceJob, ...],
                                                               tuple[TraceNode, ...]]:
    return read_pods(Path(trace), limit=limit).jobs, read_nodes(Path(nodes))


def _cell_fleet(spec: SweepSpec, trace: Path, nodes_path: Path,
                cell: Cell) -> tuple[tuple[TraceJob, ...], Fleet, float]:
    jobs, nodes = _inputs(str(trace), str(nodes_path), spec.limit)
    probe = make_fleet(spec, cell, nodes, 1.0)
    scale = _scale(str(trace), str(nodes_path), spec.limit, probe.gpus, cell.load)
    return jobs, make_fleet(spec, cell, nodes, scale), scale


@cache
def _scale(trace: str, nodes: str, limit: int | None, gpus: int, load: float) -> float:
    return scale_for(_inputs(trace, nodes, limit)[0], gpus, load)


def _cell_row(jobs: tuple[TraceJob, ...], fleet: Fleet, scale: float,
              cell: Cell) -> dict[str, Any]:
    return {
        "cell": cell.key, "fleet": cell.fleet.name, "load": cell.load, "seed": cell.seed,
        "gpus": fleet.gpus, "clusters": len(fleet.clusters), "arrival_scale": round(scale, 4),
        "offered_load": round(offered_load(jobs, fleet.gpus, scale), 4), "policies": {},
    }


def run_cell(spec: SweepSpec, trace: Path, nodes_path: Path, cell: Cell) -> dict[str, Any]:
    """Every policy of the sweep on one cell."""
    jobs, fleet, scale = _cell_fleet(spec, trace, nodes_path, cell)
    out = _cell_row(jobs, fleet, scale, cell)
    for p in spec.policies:
        out["policies"][p] = summary(simulate(jobs, fleet, p))
    return out


Task = tuple[SweepSpec, Path, Path, Cell, str]


def _run_one(task: Task) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """One policy on one cell: the unit the workers share, so that one slow policy (strict
    FIFO on an overloaded cell) does not hold a whole cell's worth of work on one core."""
    spec, trace, nodes_path, cell, policy = task
    jobs, fleet, scale = _cell_fleet(spec, trace, nodes_path, cell)
    return _cell_row(jobs, fleet, scale, cell), policy, summary(simulate(jobs, fleet, policy))


Progress = Callable[[str, str, dict[str, Any]], None]


def run_sweep(path: Path, out: Path | None = None, draw: bool = True,
              workers: int | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run every cell; write sweep.json, sweep.md (and sweep.png) under ``out``.
    ``progress(cell, policy, summary)`` is called as each run ends."""
    from orrery_hub.sim.sweep_report import aggregate, plot_sweep, table

    spec, trace, nodes = load_sweep(path)
    for p in (trace, nodes):
        if not p.exists():
            raise TraceError(f"{path}: {p} does not exist")
    todo: list[Task] = [(spec, trace, nodes, c, p) for c in cells(spec) for p in spec.policies]
    rows: dict[str, dict[str, Any]] = {}

    def done(got: tuple[dict[str, Any], str, dict[str, Any]]) -> None:
        row, policy, s = got
        rows.setdefault(row["cell"], row)["policies"][policy] = s
        if progress is not None:
            progress(row["cell"], policy, s)

    n = workers or spec.workers
    if n > 1:
        with ProcessPoolExecutor(n) as ex:
            for fut in as_completed([ex.submit(_run_one, t) for t in todo]):
                done(fut.result())
    else:
        for t in todo:
            done(_run_one(t))
    # Cells and policies in the sweep file's order, whatever order the workers finished in.
    ordered = []
    for c in cells(spec):
        row = rows[c.key]
        row["policies"] = {p: row["policies"][p] for p in spec.policies}
        ordered.append(row)
    result = {"baseline": spec.baseline, "policies": spec.policies, "cells": ordered,
              "aggregate": aggregate(ordered, spec.baseline, spec.pass_interval)}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        (out / "sweep.md").write_text(table(result) + "\n")
        if draw:
            try:
                plot_sweep(result, out / "sweep.png")
            except ImportError:
                pass
    return result
