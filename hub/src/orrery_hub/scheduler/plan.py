"""The scheduler's output: a plan the applier commits, and why the rest waits.

Made by ``cycle.plan``; read by ``orrery_hub.apply.applier.commit`` and by the simulator.
"""

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
class Preemption:
    """Stop ``victim`` (every slice it runs) to make room for ``for_job``.

    The applier sends each victim slice a stop order with ``grace_s`` (SIGTERM, then
    SIGKILL when the grace runs out), then returns the victim's slices to Pending with
    their epoch bumped: requeued from their last checkpoint, not failed, and not counted
    against the retry limit. ``lost_gpu_seconds`` is the cost the choice minimised.
    """

    victim: JobId
    for_job: JobId
    cluster: ClusterName
    slices: tuple[SliceIndex, ...]
    gpus: int
    reason: str
    lost_gpu_seconds: float
    grace_s: float


@dataclass(frozen=True, slots=True)
class Reservation:
    """GPUs held for a waiting job that does not fit yet (a large gang, or a job whose
    victims are still stopping): nothing that could outlast ``start_at`` is placed on
    ``nodes`` meanwhile. Informational for the hub; the next pass recomputes it."""

    job: JobId
    cluster: ClusterName
    nodes: tuple[NodeName, ...]
    start_at: float


@dataclass(frozen=True, slots=True)
class Plan:
    placements: tuple[SlicePlacement, ...]
    waiting: Mapping[JobId, WaitReason]
    preemptions: tuple[Preemption, ...] = ()
    reservations: tuple[Reservation, ...] = ()
    backfilled: frozenset[JobId] = frozenset()  # placed on reserved GPUs, ending in time
    # Jobs that read datasets: their options compared ("us-east: 2.1 TiB to stage, ...").
    data_notes: Mapping[JobId, str] = field(default_factory=dict)
    # Jobs waiting for a cluster that does not hold their data yet: it may stage it now.
    prefetch: Mapping[JobId, ClusterName] = field(default_factory=dict)

    def for_job(self, job: JobId) -> tuple[SlicePlacement, ...]:
        return tuple(p for p in self.placements if p.job == job)
