"""The scheduler's input: plain, immutable data. No IO and no clock: ``now`` is passed in.

Built by the hub from its store and inventory (``orrery_hub.snapshot_builder``), by the
simulator from a trace, and by tests from readable helpers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from orrery.ids import ClusterName, JobId, NodeName, SliceIndex


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    name: NodeName
    gpu_type: str | None  # None: a node without GPUs
    gpus: int
    free: tuple[int, ...]  # indices of the GPUs free to assign, ascending

    @property
    def free_count(self) -> int:
        return len(self.free)


@dataclass(frozen=True, slots=True)
class ClusterCapacity:
    name: ClusterName
    labels: Mapping[str, str]
    ready: bool  # False: Lost (silent past the failover timeout) — never placed on
    nodes: tuple[NodeCapacity, ...]


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A job with slices waiting for placement."""

    id: JobId
    name: str
    priority: int
    seq: int  # submission order: earlier first among equal priority
    gpus_per_slice: int
    gpu_types: frozenset[str] | None  # None: any type
    pending: tuple[SliceIndex, ...]  # slices to place now
    gang: bool  # True: all of ``pending`` or none
    queue: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    # Clusters the policy engine allows (None: all), and why the others are not allowed.
    allowed_clusters: frozenset[ClusterName] | None = None
    denied_reasons: Mapping[ClusterName, str] = field(default_factory=dict)
    # Soft preferences: a higher score wins among clusters that fit equally well.
    cluster_scores: Mapping[ClusterName, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    clusters: tuple[ClusterCapacity, ...]
    jobs: tuple[JobRequest, ...]
