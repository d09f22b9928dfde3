"""The state of one scheduling pass, shared by its two halves: placing (``cycle``) and
preempting and reserving (``evict``). Pure, like the rest of the scheduler."""

from __future__ import annotations

from collections.abc import Set

from orrery.ids import ClusterName, JobId
from orrery_hub.scheduler import backfill, preemption, waitlist
from orrery_hub.scheduler.fairness import Offer
from orrery_hub.scheduler.fit import ClusterFit
from orrery_hub.scheduler.plan import Preemption, Reservation, SlicePlacement, WaitReason
from orrery_hub.scheduler.quota import QuotaBook
from orrery_hub.scheduler.ranked import Ranked
from orrery_hub.scheduler.snapshot import JobRequest, RunningJob, RunningSlice, Snapshot

ShapeKey = tuple[int, frozenset[str] | None, frozenset[ClusterName] | None]
INF = float("inf")


def eligible_for(job: JobRequest, fits: list[ClusterFit]) -> list[ClusterFit]:
    allowed = job.allowed_clusters
    return [
        c
        for c in fits
        if c.ready
        and (allowed is None or c.name in allowed)
        and (job.gpus_per_slice == 0 or c.has_type(job.gpu_types))
    ]


class PassState:
    """The mutable state of one pass; ``cycle.plan`` makes one, runs it and drops it."""

    def __init__(self, snapshot: Snapshot, now: float) -> None:
        self.now = now
        self.policy = pol = snapshot.policy
        self.fits = [ClusterFit(c) for c in sorted(snapshot.clusters, key=lambda c: c.name)]
        self.by_name = {f.name: f for f in self.fits}
        self.changed: list[ClusterFit] = []  # clusters in the order their free GPUs changed
        for f in self.fits:
            f.log = self.changed
        self.ranked: dict[ShapeKey, Ranked] = {}
        self.queues = {q.name: q for q in snapshot.queues}
        self.running = snapshot.running
        self.quota = QuotaBook(self.queues, snapshot.running) if pol.quotas else None
        # A kept order is used only when made for this policy and these jobs (by count:
        # checking each one would cost what keeping the order saves).
        kept = snapshot.order
        if kept is not None and (
            kept.size != len(snapshot.jobs)
            or kept.basis != waitlist.basis(pol, snapshot.runtime_history)
        ):
            kept = None
        self.order = kept
        self.offered: set[JobId] = set()  # with a kept order: jobs offered so far
        self.offer = Offer(
            snapshot.jobs, pol, self.queues, snapshot.running, snapshot.runtime_history, kept
        )
        self.placements: list[SlicePlacement] = []
        self.waiting: dict[JobId, WaitReason] = {}
        # Reasons told a kind or shape of job at once, once the walk ended (``tail``).
        self.waiting_groups: list[tuple[Set[JobId], WaitReason]] = []
        self.preemptions: list[Preemption] = []
        self.reservations: list[Reservation] = []
        self.backfilled: set[JobId] = set()
        self.no_fit: dict[ShapeKey, int] = {}  # shape -> smallest slice count known not to fit
        self.reasons: dict[tuple[ShapeKey, int], WaitReason] = {}
        self.no_fit_lent: dict[ShapeKey, list[tuple[int, float]]] = {}
        self.quota_memo: dict[tuple[str, int], tuple[str | None, bool, int]] = {}
        # ``cycle._Pass._alike``: kinds of job that failed, while the pass is unchanged.
        self.failed_kinds: dict[waitlist.Alike, WaitReason] = {}
        self.failed_at: tuple[int, int, int] = (0, 0, 0)
        self.failures_noted = 0  # kinds put in ``failed_kinds`` so far
        self.unsettled: waitlist.Alike | None = None  # ``tail.KeptTail._rest_known``
        self.quota_reasons: dict[tuple[int, frozenset[str] | None, int, str], WaitReason] = {}
        self.eligible: dict[
            tuple[bool, frozenset[str] | None, frozenset[ClusterName] | None], list[ClusterFit]
        ] = {}
        self.free_left = sum(c.free_all for c in self.fits if c.ready)
        self.jobs = snapshot.jobs
        self._rank: dict[str, int] | None = None
        self.inflight: dict[JobId, list[RunningJob]] = {}
        for r in snapshot.running:
            if r.stopping and r.preempted_for is not None:
                self.inflight.setdefault(r.preempted_for, []).append(r)
        self.preemptible = pol.preemption and any(
            r.preemptible and not r.stopping for r in snapshot.running
        )
        self.evicted: set[JobId] = set()
        self.victims = 0
        self.attempts = 0
        self.failed_preempt: set[tuple[ShapeKey, int, int, str, bool]] = set()
        self.held: list[ClusterFit] = []
        self.max_hold = -INF
        self._on: dict[ClusterName, list[tuple[RunningJob, tuple[RunningSlice, ...]]]] | None
        self._on = None
        self._tables: dict[ClusterName, list[preemption.Entry]] = {}
        self._rel: backfill.Releases | None = None

    def _may_still_preempt(self) -> bool:
        pol = self.policy
        return (
            self.preemptible
            and self.attempts < pol.preemption_attempts
            and self.victims < pol.max_preemptions
        )

    def _eligible(self, job: JobRequest) -> list[ClusterFit]:
        """Clusters ``job`` may use at all; fixed for the pass, so computed once a shape."""
        key = (job.gpus_per_slice == 0, job.gpu_types, job.allowed_clusters)
        got = self.eligible.get(key)
        if got is None:
            got = self.eligible[key] = eligible_for(job, self.fits)
        return got

    def _ranked(self, job: JobRequest) -> Ranked:
        """``job``'s eligible clusters ranked by how many of its slices fit (``ranked``)."""
        key: ShapeKey = (job.gpus_per_slice, job.gpu_types, job.allowed_clusters)
        got = self.ranked.get(key)
        if got is None:
            got = self.ranked[key] = Ranked(
                self._eligible(job), job.gpus_per_slice, job.gpu_types, self.changed
            )
        return got
