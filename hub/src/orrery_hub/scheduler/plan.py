"""The scheduler's output: a plan the applier commits, and why the rest waits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from orrery.ids import ClusterName, JobId, NodeName, SliceIndex


@dataclass(frozen=True, slots=True)
class SlicePlacement:
    job: JobId
    index: SliceIndex
    cluster: ClusterName
    node: NodeName
    gpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WaitReason:
    """Why a job is not placed: one line, and one line per cluster where it is cheap to say."""

    summary: str
    clusters: Mapping[ClusterName, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    placements: tuple[SlicePlacement, ...]
    waiting: Mapping[JobId, WaitReason]

    def for_job(self, job: JobId) -> tuple[SlicePlacement, ...]:
        return tuple(p for p in self.placements if p.job == job)
