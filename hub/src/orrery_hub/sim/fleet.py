"""The fleet file: which clusters and queues a simulation runs, and how trace rows map
onto them. Read by ``cli`` and ``engine``; pydantic with ``extra="forbid"`` at this
boundary, so a misspelt key is an error that names it.

```yaml
nodes: openb_node_list_gpu_node.csv   # relative to this file; default: beside the trace
node_fraction: 0.05                    # keep every k-th node of each model (smaller fleet)
clusters:                              # default: one cluster per GPU model
  - {name: g2, models: [G2]}
  - {name: v100, models: [V100M16, V100M32]}
queues:                                # default: one queue per QoS class, no quotas
  - {name: LS, weight: 2, guaranteed: 120, cohort: prod, priority: 10}
  - {name: BE, weight: 1, guaranteed: 60, cohort: prod, priority: 0}
arrival_scale: 20        # divide submission times: the same jobs, arriving faster
checkpoint_interval: 1800  # s; a preempted job loses the work since its last one
runtime_slack: 1.0       # declared maxRuntime = trace duration x this
pass_interval: 10        # s of simulated time between scheduling passes, at least
grace: 30                # s from SIGTERM to the GPUs being free
seed: 0                  # ties and synthetic team labels
teams: 8                 # synthetic teams (the trace has no user column)
```
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orrery.document import load_document
from orrery.textfile import read_text
from orrery_hub.scheduler import QueueConfig
from orrery_hub.sim.datasets import SimDataset, SimLink
from orrery_hub.sim.trace import TraceError, TraceNode, read_nodes

DEFAULT_NODES = "openb_node_list_gpu_node.csv"


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    models: list[str] = Field(min_length=1)


class QueueSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0)
    guaranteed: int | None = Field(default=None, ge=0)
    cohort: str | None = None
    borrow_limit: int | None = Field(default=None, ge=0)
    priority: int = 0


class FleetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: str | None = None
    node_fraction: float = Field(default=1.0, gt=0, le=1)
    clusters: list[ClusterSpec] | None = None
    queues: list[QueueSpec] | None = None
    arrival_scale: float = Field(default=1.0, gt=0)
    checkpoint_interval: float = Field(default=1800.0, gt=0)
    runtime_slack: float = Field(default=1.0, ge=1)
    pass_interval: float = Field(default=10.0, ge=0)
    grace: float = Field(default=30.0, ge=0)
    seed: int = 0
    teams: int = Field(default=8, ge=1)
    # Datasets and links (see sim/datasets.py): GPU-hours spent waiting on data.
    regions: dict[str, str] = Field(default_factory=dict)
    datasets: list[SimDataset] = Field(default_factory=list)
    links: list[SimLink] = Field(default_factory=list)
    delay_cost_per_gpu_hour: float = Field(default=2.0, ge=0)


QOS_PRIORITY = {"Guaranteed": 10, "LS": 10, "Burstable": 5, "BE": 0}


@dataclass(frozen=True, slots=True)
class Fleet:
    clusters: dict[str, tuple[TraceNode, ...]]
    queues: tuple[QueueConfig, ...]
    priorities: dict[str, int]  # queue -> priority of its jobs
    spec: FleetSpec

    @property
    def gpus(self) -> int:
        return sum(n.gpus for ns in self.clusters.values() for n in ns)


def _thin(nodes: list[TraceNode], fraction: float, seed: int = 0) -> list[TraceNode]:
    """Every k-th node of each model, at least one: a smaller fleet of the same mix. The
    seed shifts which k-th (seed 0: the first of each stride), so seeds draw other nodes."""
    if fraction >= 1:
        return nodes
    by_model: dict[str, list[TraceNode]] = defaultdict(list)
    for n in nodes:
        by_model[n.model].append(n)
    out: list[TraceNode] = []
    for _model, ns in sorted(by_model.items()):
        keep = max(1, round(len(ns) * fraction))
        step = len(ns) / keep
        shift = seed % max(1, int(step))
        out.extend(ns[min(len(ns) - 1, int(i * step) + shift)] for i in range(keep))
    return out


def load_fleet(path: Path | None, trace_path: Path) -> Fleet:
    """The fleet from ``path``, or the default one built from the node list beside the
    trace. Raises TraceError naming the bad field."""
    raw: object = {}
    if path is not None:
        # One line per mistake, as for a manifest: NotFound, or the line of bad YAML.
        raw = load_document(read_text(path, what="fleet file"), source=str(path)) or {}
    try:
        spec = FleetSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise TraceError(f"{path}: {loc or '<document>'}: {first['msg']}") from None
    base = path.parent if path is not None else trace_path.parent
    nodes_path = base / spec.nodes if spec.nodes else trace_path.parent / DEFAULT_NODES
    return build_fleet(spec, read_nodes(nodes_path))


def build_fleet(spec: FleetSpec, all_nodes: tuple[TraceNode, ...]) -> Fleet:
    """The fleet ``spec`` describes, drawn from ``all_nodes`` (also used by ``sweep``)."""
    nodes = _thin(list(all_nodes), spec.node_fraction, spec.seed)
    groups = spec.clusters or [
        ClusterSpec(name=m.lower(), models=[m]) for m in sorted({n.model for n in nodes})
    ]
    clusters: dict[str, tuple[TraceNode, ...]] = {}
    for g in groups:
        clusters[g.name] = tuple(n for n in nodes if n.model in g.models)
    queues = spec.queues or [
        QueueSpec(name=q, priority=p) for q, p in sorted(QOS_PRIORITY.items())
    ]
    return Fleet(
        clusters=clusters,
        queues=tuple(
            QueueConfig(q.name, q.weight, q.guaranteed, q.cohort, q.borrow_limit) for q in queues
        ),
        priorities={q.name: q.priority for q in queues},
        spec=spec,
    )
