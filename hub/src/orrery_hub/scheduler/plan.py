"""The scheduler's output: a plan the applier commits, and why the rest waits.

Made by ``cycle.plan``; read by ``orrery_hub.apply.applier.commit`` and by the simulator.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence, Set
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


class WaitReasons(Mapping[JobId, WaitReason]):
    """Why each job a pass left waiting waits: a reason per job (``each``), and reasons
    told a group of jobs at once (``groups``: the jobs of one kind or shape in the kept
    order that the pass did not offer, ``tail.KeptTail``). A group keeps the kept order's
    own set rather than a dict entry per job: copying 100,000 waiting jobs into a dict
    cost ~14 ms a pass, a set difference ~2 ms. Read-only once the pass returns."""

    __slots__ = ("_each", "_groups")

    def __init__(
        self,
        each: Mapping[JobId, WaitReason],
        groups: Sequence[tuple[Set[JobId], WaitReason]] = (),
    ) -> None:
        # The groups hold no job of ``each`` and no job of another group: a pass gives
        # reasons one by one only to the jobs it offered, a group only the jobs of one
        # kind or shape it did not offer (``tests/hub/test_scheduler_shortcuts.py``
        # counts them).
        self._each = each
        self._groups = tuple(g for g in groups if g[0])

    @property
    def groups(self) -> tuple[tuple[Set[JobId], WaitReason], ...]:
        return self._groups

    @property
    def each(self) -> Mapping[JobId, WaitReason]:
        """The reasons given job by job (none of these jobs is in a group)."""
        return self._each

    def _grouped(self, job: object) -> WaitReason | None:
        for ids, reason in self._groups:
            if job in ids:
                return reason
        return None

    def __getitem__(self, job: JobId) -> WaitReason:
        r = self._each.get(job)
        if r is None:
            r = self._grouped(job)
            if r is None:
                raise KeyError(job)
        return r

    def __contains__(self, job: object) -> bool:
        return job in self._each or self._grouped(job) is not None

    def __iter__(self) -> Iterator[JobId]:
        yield from self._each
        for ids, _ in self._groups:
            yield from ids

    def __len__(self) -> int:
        return len(self._each) + sum(len(ids) for ids, _ in self._groups)

    def __repr__(self) -> str:
        return f"WaitReasons({len(self)} jobs, {len(self._groups)} groups)"


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
