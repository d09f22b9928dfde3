"""What the engine is told: plain, immutable facts about jobs, clusters and usage.

The hub builds them from its store and inventory, ``orrery policy check`` from a manifest,
tests from helpers. The engine never fetches anything itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from orrery.ids import ClusterName, JobId
from orrery.manifest import JobManifest

Period = Literal["day", "month"]
NO_TEAM = ""  # jobs without a `team` label share one quota and budget bucket under this key


def team_text(team: str) -> str:
    return f"team {team}" if team else "jobs without a team label"


@dataclass(frozen=True, slots=True)
class JobFacts:
    name: str
    labels: Mapping[str, str]
    queue: str
    slices: int  # all slices of the job
    gpus_per_slice: int
    gpu_types: frozenset[str] | None  # None: any type
    max_runtime_s: float | None  # as declared; None: the job declared none
    id: JobId | None = None  # None: not submitted yet (``orrery policy check``)
    priority: int = 0
    seq: int = 0  # submission order, as the scheduler orders jobs
    pending_slices: int | None = None  # slices waiting for placement; None: all of them

    @property
    def team(self) -> str:
        return self.labels.get("team", NO_TEAM)

    @property
    def total_gpus(self) -> int:
        return self.slices * self.gpus_per_slice

    @property
    def pending_gpus(self) -> int:
        n = self.slices if self.pending_slices is None else self.pending_slices
        return n * self.gpus_per_slice

    @classmethod
    def from_manifest(
        cls,
        manifest: JobManifest,
        *,
        job_id: JobId | None = None,
        seq: int = 0,
        pending_slices: int | None = None,
    ) -> JobFacts:
        spec = manifest.spec
        return cls(
            name=manifest.metadata.name,
            labels=dict(manifest.metadata.labels),
            queue=spec.queue,
            slices=spec.slices,
            gpus_per_slice=spec.gpus_per_slice,
            gpu_types=spec.gpu_types,
            # The manifest fills in a default runtime; the engine wants to know whether the
            # user declared one, so that a guardrail's limit applies instead of the default.
            max_runtime_s=spec.max_runtime_s if spec.max_runtime is not None else None,
            id=job_id,
            priority=spec.priority,
            seq=seq,
            pending_slices=pending_slices,
        )


    def submitted(self, job_id: JobId, seq: int) -> JobFacts:
        """The same job once stored: its id and place in submission order."""
        return JobFacts(
            self.name, self.labels, self.queue, self.slices, self.gpus_per_slice,
            self.gpu_types, self.max_runtime_s, job_id, self.priority, seq,
            self.pending_slices,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    name: ClusterName
    labels: Mapping[str, str]  # the region is the label `region`
    gpu_types: frozenset[str]  # GPU types the cluster has at all (free or not)
    spot: bool = False  # True: price its GPUs at the spot price where one is set


@dataclass(frozen=True, slots=True)
class Usage:
    """What is in use now and spent so far; the hub computes it from its store.

    ``gpus_by_team`` / ``gpus_by_queue``: GPUs held by running (or assigned) slices.
    ``spend``: (team, period) -> money spent in the current period, including what running
    jobs have committed (their estimated cost still to come), so a budget is not broken by
    jobs admitted one after another while the first ones still run.
    Teams are keyed by name, ``NO_TEAM`` for jobs without a team label.
    """

    gpus_by_team: Mapping[str, int] = field(default_factory=dict)
    gpus_by_queue: Mapping[str, int] = field(default_factory=dict)
    spend: Mapping[tuple[str, Period], float] = field(default_factory=dict)

    def gpus(self, per: Literal["team", "queue"], key: str) -> int:
        table = self.gpus_by_team if per == "team" else self.gpus_by_queue
        return table.get(key, 0)

    def spent(self, team: str, period: Period) -> float:
        return self.spend.get((team, period), 0.0)


NO_USAGE = Usage()

