"""Datasets and links in a simulation (the fleet file's ``datasets``, ``links``,
``regions``): which trace jobs read which dataset, where each dataset is cached as the run
goes, and the GPU-seconds jobs spend holding GPUs while their data stages.

```yaml
regions: {g2: eu-west-1, v100: us-east-1}     # cluster -> region (default: its name)
datasets:
  - {name: corpus, size: 2TiB, region: eu-west-1, readers: 0.3}   # 30% of jobs read it
links:
  - {from: "eu-*", to: "us-*", gbps: 8, perGB: 0.09}
delay_cost_per_gpu_hour: 2.0
```

A job placed on a cluster that does not hold its dataset holds its GPUs for the transfer
time (size over the link from the nearest copy) before its work starts; the dataset
then counts as cached there from that placement on, for the rest of the run (jobs placed
there in the same pass share the copy; no eviction is simulated).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orrery.dataset import parse_size
from orrery.ids import ClusterName
from orrery_hub.scheduler.data import DataPolicy, DatasetFacts, Link, transfer


class SimDataset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    size: str | int
    region: str = Field(min_length=1)
    readers: float = Field(default=0.0, ge=0, le=1, description="share of jobs reading it")

    @field_validator("size")
    @classmethod
    def _size(cls, v: str | int) -> str | int:
        parse_size(v)
        return v


class SimLink(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    source: str = Field(alias="from")
    dest: str = Field(alias="to")
    gbps: float | None = Field(default=None, gt=0)
    per_gb: float | None = Field(default=None, alias="perGB", ge=0)


class DataWorld:
    """The run's data: who reads what, and where each dataset is cached by now."""

    def __init__(
        self,
        datasets: list[SimDataset],
        links: list[SimLink],
        regions: Mapping[str, str],
        *,
        seed: int,
        delay_cost: float,
        grace_s: float,
    ) -> None:
        self.specs = {d.name: d for d in datasets}
        self.regions = dict(regions)
        self.seed = seed
        self.cached: dict[str, set[ClusterName]] = {d.name: set() for d in datasets}
        self.policy_base = DataPolicy(
            datasets={},
            links=tuple(Link(x.source, x.dest, gbps=x.gbps, per_gb=x.per_gb) for x in links),
            delay_cost_per_gpu_hour=delay_cost,
            grace_s=grace_s,
        )

    def region(self, cluster: str) -> str:
        return self.regions.get(cluster, cluster)

    def reads(self, job: str) -> tuple[str, ...]:
        """The dataset a trace job reads, if any: drawn once per job, by its name."""
        draw = (zlib.crc32(f"{self.seed}:data:{job}".encode()) % 10_000) / 10_000
        acc = 0.0
        for d in self.specs.values():
            acc += d.readers
            if draw < acc:
                return (d.name,)
        return ()

    def policy(self) -> DataPolicy:
        return DataPolicy(
            datasets={
                n: DatasetFacts(
                    n,
                    parse_size(d.size),
                    source_regions=(d.region,),
                    cached_on=frozenset(self.cached[n]),
                )
                for n, d in self.specs.items()
            },
            links=self.policy_base.links,
            delay_cost_per_gpu_hour=self.policy_base.delay_cost_per_gpu_hour,
            grace_s=self.policy_base.grace_s,
        )

    def stage(self, names: tuple[str, ...], cluster: ClusterName) -> float:
        """Seconds to bring ``names`` to ``cluster`` (then cached there)."""
        total = 0.0
        for n in names:
            if cluster in self.cached[n]:
                continue
            d = self.specs[n]
            sources = {d.region, *(self.region(c) for c in self.cached[n])}
            size = parse_size(d.size)
            total += min(
                transfer(self.policy_base, size, s, self.region(cluster))[0] for s in sources
            )
            self.cached[n].add(cluster)
        return total
