"""One scheduling pass: ``plan(snapshot, now) -> Plan``. Pure: no IO, no clock, no database.

Called by the hub's reconcile loop (``orrery_hub.main``), the simulator
(``orrery_hub.sim.engine``), the tests and the benchmarks. Steps, in order (Kueue writes
its cycle the same way); see README.md for the picture:

1. Copy each cluster's free GPUs into a working structure (``fit.ClusterFit``); count what
   each queue and tenant holds (``quota``, ``fairness``).
2. Offer the waiting jobs in the policy's order (``fairness.Offer``): FIFO, or priority
   then submission, or weighted fair share between tenants.
3. For each job: admit it against its queue's quota (``quota``), then place it: on one
   cluster when one fits it all (highest policy score, then the tightest fit), else
   across the fewest clusters, largest first. A gang is placed all or nothing.
   Reserved nodes are lent only to jobs that end before the reservation starts
   (``backfill``).
4. A job that does not fit may preempt (``preemption``): lower-priority jobs, or borrowers
   of its cohort's quota; the GPUs it will get are held for it meanwhile. Failing that,
   the first such job gets a reservation (EASY backfill). Either way it gets a reason.
5. Capacity only shrinks during a pass, so once a job shape fails, larger requests of the
   same shape fail too: remembered, not retried. Once no GPU is free, only jobs that may
   preempt are still offered; the rest only need their reasons (``_tail``).
"""

from __future__ import annotations

from dataclasses import replace

from orrery.ids import ClusterName, JobId, NodeName, SliceIndex
from orrery_hub.scheduler import backfill, data, preemption, types
from orrery_hub.scheduler.fairness import Offer, order, tenant_of
from orrery_hub.scheduler.fit import ClusterFit
from orrery_hub.scheduler.plan import Plan, Preemption, Reservation, SlicePlacement, WaitReason
from orrery_hub.scheduler.quota import QuotaBook
from orrery_hub.scheduler.reasons import need_text, why
from orrery_hub.scheduler.snapshot import JobRequest, RunningJob, RunningSlice, Snapshot

__all__ = ["order", "plan"]

ShapeKey = tuple[int, frozenset[str] | None, frozenset[ClusterName] | None]
INF = float("inf")


def _eligible(job: JobRequest, fits: list[ClusterFit]) -> list[ClusterFit]:
    allowed = job.allowed_clusters
    return [
        c
        for c in fits
        if c.ready
        and (allowed is None or c.name in allowed)
        and (job.gpus_per_slice == 0 or c.has_type(job.gpu_types))
    ]


def _choose(
    job: JobRequest,
    n: int,
    candidates: list[tuple[ClusterFit, int]],
    prefer: list[frozenset[str]],
) -> list[tuple[ClusterFit, int]]:
    """Which clusters take how many slices. Returns [] when a gang cannot be placed.
    ``prefer``: with ``Policy.type_aware``, a flexible job's types, best first."""
    scores = job.cluster_scores
    whole = [(c, k) for c, k in candidates if k >= n]
    if whole:
        if prefer and len(whole) > 1:
            # Type-aware: the cluster whose best type that holds the job ranks first.
            g = job.gpus_per_slice

            def best(c: ClusterFit) -> int:
                return next((i for i, one in enumerate(prefer) if c.slices_fit(g, one) >= n),
                            len(prefer))

            c, _ = min(whole, key=lambda ck: (
                -scores.get(ck[0].name, 0.0), best(ck[0]), ck[1], ck[0].name))
            return [(c, n)]
        # Policy preference first, then the tightest fit (leave big holes for big jobs).
        c, _ = min(whole, key=lambda ck: (-scores.get(ck[0].name, 0.0), ck[1], ck[0].name))
        return [(c, n)]
    ranked = sorted(
        candidates, key=lambda ck: (-ck[1], -scores.get(ck[0].name, 0.0), ck[0].name)
    )
    out: list[tuple[ClusterFit, int]] = []
    left = n
    for c, k in ranked:
        if left == 0:
            break
        take = min(k, left)
        out.append((c, take))
        left -= take
    if left and job.gang:
        return []
    return out


class _Pass:
    """The mutable state of one pass; ``plan`` makes one, runs it and drops it."""

    def __init__(self, snapshot: Snapshot, now: float) -> None:
        self.now = now
        self.policy = pol = snapshot.policy
        self.fits = [ClusterFit(c) for c in sorted(snapshot.clusters, key=lambda c: c.name)]
        self.by_name = {f.name: f for f in self.fits}
        self.queues = {q.name: q for q in snapshot.queues}
        self.running = snapshot.running
        self.quota = QuotaBook(self.queues, snapshot.running) if pol.quotas else None
        self.offer = Offer(snapshot.jobs, pol, self.queues, snapshot.running,
                           snapshot.runtime_history)
        self.placements: list[SlicePlacement] = []
        self.waiting: dict[JobId, WaitReason] = {}
        self.preemptions: list[Preemption] = []
        self.reservations: list[Reservation] = []
        self.backfilled: set[JobId] = set()
        self.no_fit: dict[ShapeKey, int] = {}  # shape -> smallest slice count known not to fit
        self.reasons: dict[tuple[ShapeKey, int], WaitReason] = {}
        self.no_fit_lent: dict[ShapeKey, list[tuple[int, float]]] = {}
        self.quota_memo: dict[tuple[str, int], tuple[str | None, bool, int]] = {}
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
        self._releases: dict[ClusterName, list[backfill.Release]] = {}

    # --- the pass -----------------------------------------------------------------------

    def run(self) -> Plan:
        for job in self.offer:
            if self.free_left <= 0:
                self._tail([job, *self.offer.rest()])
                break
            self._one(job)
            if self.policy.head_of_line and job.id in self.waiting:
                self._wait_all(self.offer.rest())
                break
        return Plan(
            placements=tuple(self.placements),
            waiting=self.waiting,
            preemptions=tuple(self.preemptions),
            reservations=tuple(self.reservations),
            backfilled=frozenset(self.backfilled),
        )

    def _may_still_preempt(self) -> bool:
        pol = self.policy
        return (
            self.preemptible
            and self.attempts < pol.preemption_attempts
            and self.victims < pol.max_preemptions
        )

    def _tail(self, jobs: list[JobRequest]) -> None:
        """No GPU is free: only a job that may preempt can still get one. Offer those (in
        the order ``Offer.rest`` gives, least-served tenant first) while preemption
        searches are left; the rest only need their reasons."""
        if not self._may_still_preempt():
            self._wait_all(jobs)
            return
        lowest = min(
            (r.priority for r in self.running if r.preemptible and not r.stopping),
            default=None,
        )
        q = self.quota
        # Jobs alike in shape, priority and queue get the same answer until a preemption
        # succeeds (which changes quotas and victims): ask once per kind. The others only
        # need the reason for their shape (as in ``_wait_all``, in the same loop).
        dead: set[tuple[object, ...]] = set()
        reasons: dict[tuple[int, frozenset[str] | None, frozenset[ClusterName] | None, int],
                      WaitReason] = {}
        waiting = self.waiting
        for job in jobs:
            g, n = job.gpus_per_slice, len(job.pending)
            if not n:
                continue
            if not g:
                self._one(job)
                continue
            kind = (g, job.gpu_types, job.allowed_clusters, n, job.priority, job.queue)
            if kind not in dead and self._may_still_preempt() and (
                (lowest is not None and job.priority > lowest)
                or (q is not None and q.within_guarantee(job.queue, job.gpus))
            ):
                before = len(self.preemptions)
                self._one(job)
                if len(self.preemptions) == before:
                    dead.add(kind)
                else:
                    dead.clear()
                continue
            key = (g, job.gpu_types, job.allowed_clusters, n)
            r = reasons.get(key)
            if r is None:
                r = reasons[key] = why(job, n, self.fits)
            waiting[job.id] = r

    def _wait_all(self, jobs: list[JobRequest]) -> None:
        """Reasons for jobs that can no longer be placed this pass: the hot loop of a pass
        over a full fleet, so one reason per shape and one dict lookup per job. (Measured:
        a plain loop beats attrgetter/zip pipelines here.)"""
        cache: dict[tuple[int, frozenset[str] | None, frozenset[ClusterName] | None, int],
                    WaitReason] = {}
        waiting = self.waiting
        for job in jobs:
            key = (job.gpus_per_slice, job.gpu_types, job.allowed_clusters, len(job.pending))
            r = cache.get(key)
            if r is None:
                if not key[3]:
                    continue
                if not key[0]:  # CPU-only slices need no free GPU: still placed
                    self._one(job)
                    continue
                r = cache[key] = why(job, key[3], self.fits)
            waiting[job.id] = r

    def _one(self, job: JobRequest) -> None:
        n = len(job.pending)
        if n == 0:
            return
        if self.quota is not None:
            qkey = (job.queue, job.gpus)
            verdict = self.quota_memo.get(qkey)
            if verdict is None:  # usage changes only when something is placed: memoised
                q = self.quota
                verdict = self.quota_memo[qkey] = (
                    q.refusal(job.queue, job.gpus),
                    q.within_guarantee(job.queue, job.gpus),
                    q.cohort_shortfall(job.queue, job.gpus),
                )
            refusal, within, shortfall = verdict
            if refusal is not None:
                if self.policy.preemption and within and self._preempt(job, n, shortfall):
                    return
                rkey = (job.gpus_per_slice, job.gpu_types, n, refusal)
                reason = self.quota_reasons.get(rkey)
                if reason is None:
                    reason = WaitReason(f"{need_text(job, n)}; {refusal}")
                    self.quota_reasons[rkey] = reason
                self.waiting[job.id] = reason
                return
        end = self.now + job.max_runtime if job.max_runtime is not None else INF
        lent = (
            end <= self.max_hold
            and not self._known_lent_failure(job, n, end)
            and any([c.open_holds(end) for c in self.held])
        )
        placed = self._place(job, n, lent)
        if lent:
            for c in self.held:
                c.close_holds()
        if placed:
            return
        if job.id in self.inflight:
            stopping = self.inflight[job.id]
            self._reserve(job, n)
            where = ", ".join(sorted({s.cluster for r in stopping for s in r.slices}))
            self.waiting[job.id] = WaitReason(
                f"{need_text(job, n)}; waiting for {len(stopping)} preempted job(s) "
                f"to stop on {where}"
            )
            return
        if self.policy.preemption and self._preempt(job, n, 0):
            return
        reason = self._reason(job, n)
        if self.policy.backfill and not self.reservations and job.gpus_per_slice > 0:
            res = self._reserve(job, n)
            if res is not None:
                reason = WaitReason(
                    f"{reason.summary}; reserved {len(res.nodes)} node(s) on {res.cluster} "
                    f"from t={res.start_at:.0f}",
                    reason.clusters,
                )
        self.waiting[job.id] = reason

    def _reason(self, job: JobRequest, n: int) -> WaitReason:
        # One text per shape and pass: it describes capacity when the shape first failed.
        key = ((job.gpus_per_slice, job.gpu_types, job.allowed_clusters), n)
        r = self.reasons.get(key)
        if r is None:
            r = self.reasons[key] = why(job, n, self.fits)
        return r

    def _type_rank(self) -> dict[str, int] | None:
        """See ``types.rank``; built on first need, fixed for the pass."""
        if not self.policy.type_aware:
            return None
        if self._rank is None:
            self._rank = types.rank(self.fits, self.jobs)
        return self._rank or None

    def _known_lent_failure(self, job: JobRequest, n: int, end: float) -> bool:
        """Held nodes are lent to jobs ending by the hold's end; a job ending earlier may
        borrow at least as much, so a failure with lent nodes speaks for later ends too."""
        shape: ShapeKey = (job.gpus_per_slice, job.gpu_types, job.allowed_clusters)
        need = n if job.gang else 1
        return any(nd <= need and e <= end for nd, e in self.no_fit_lent.get(shape, ()))

    def _eligible(self, job: JobRequest) -> list[ClusterFit]:
        """Clusters ``job`` may use at all; fixed for the pass, so computed once a shape."""
        key = (job.gpus_per_slice == 0, job.gpu_types, job.allowed_clusters)
        got = self.eligible.get(key)
        if got is None:
            got = self.eligible[key] = _eligible(job, self.fits)
        return got

    def _place(self, job: JobRequest, n: int, lent: bool) -> bool:
        """Place what fits; True when the job needs nothing more this pass."""
        shape: ShapeKey = (job.gpus_per_slice, job.gpu_types, job.allowed_clusters)
        need = n if job.gang else 1
        if not lent and self.no_fit.get(shape, 1 << 30) <= need:
            return False
        end = self.now + (job.max_runtime or 0.0) if lent else INF
        candidates = [
            (c, k)
            for c in self._eligible(job)
            if (k := c.slices_fit(job.gpus_per_slice, job.gpu_types)) > 0
        ]
        flexible = job.gpu_types is None or len(job.gpu_types) > 1
        rank = self._type_rank() if flexible and job.gpus_per_slice > 0 else None
        prefer = types.preferred(job, rank) if rank is not None else []
        chosen = _choose(job, n, candidates, prefer)
        if not chosen:
            if lent:
                self.no_fit_lent.setdefault(shape, []).append((need, end))
            # Lent or not, what the job saw includes everything unlent: a lesson for all.
            self.no_fit[shape] = min(self.no_fit.get(shape, 1 << 30), need)
            return False
        indices = iter(sorted(job.pending))
        placed = 0
        for cluster, k in chosen:
            allowed = job.gpu_types
            for one in prefer:  # the whole share in the best type that holds it
                if cluster.slices_fit(job.gpus_per_slice, one) >= k:
                    allowed = one
                    break
            for take in cluster.take(k, job.gpus_per_slice, allowed):
                if take.node in cluster.held:
                    self.backfilled.add(job.id)
                self.placements.append(
                    SlicePlacement(
                        job=job.id,
                        index=SliceIndex(next(indices)),
                        cluster=cluster.name,
                        node=take.node,
                        gpus=take.gpus,
                    )
                )
                placed += 1
        gpus = placed * job.gpus_per_slice
        self.free_left -= gpus
        self.offer.charge(job, gpus)
        if self.quota is not None:
            self.quota.charge(job.queue, gpus)
            self.quota_memo.clear()
        if placed < n:  # independent slices: some placed, the rest wait
            self.no_fit[shape] = 1
            self.waiting[job.id] = why(job, n - placed, self.fits)
        return True

    # --- preemption and reservations ----------------------------------------------------

    def _running_on(self) -> dict[ClusterName, list[tuple[RunningJob, tuple[RunningSlice, ...]]]]:
        """Running jobs per cluster with their slices there; built on first need."""
        if self._on is None:
            on: dict[ClusterName, list[tuple[RunningJob, tuple[RunningSlice, ...]]]] = {}
            for r in self.running:
                by: dict[ClusterName, list[RunningSlice]] = {}
                for s in r.slices:
                    by.setdefault(s.cluster, []).append(s)
                for c, ss in by.items():
                    on.setdefault(c, []).append((r, tuple(ss)))
            self._on = on
        return self._on

    def _table(self, cluster: ClusterName) -> list[preemption.Entry]:
        """Possible victims on ``cluster``, cheapest first; built on first need."""
        got = self._tables.get(cluster)
        if got is None:
            got = self._tables[cluster] = preemption.table(
                self._running_on().get(cluster, ()), self.now, self.policy.min_run_s)
        return got

    def _may_evict(self, job: JobRequest, r: RunningJob) -> str | None:
        if r.id == job.id or r.id in self.evicted:
            return None
        q = self.quota
        if (
            q is not None
            and r.queue != job.queue
            and q.cohort(job.queue) is not None
            and q.cohort(r.queue) == q.cohort(job.queue)
            and q.borrowed(r.queue) > 0
            and q.within_guarantee(job.queue, job.gpus)
        ):
            return f"reclaimed: queue {job.queue} takes back its guarantee from {r.queue}"
        if r.priority < job.priority and self._towards_fairness(job, r):
            # Across queues under quota, only what the victim's queue borrowed is fair game
            # (``_budget`` enforces how much); within a queue, priority alone decides.
            return f"preempted by job {job.id} (priority {job.priority} over {r.priority})"
        return None

    def _towards_fairness(self, job: JobRequest, r: RunningJob) -> bool:
        """With fair share, a job evicts another tenant's only if its own tenant's share,
        with the job placed, stays at or below the victim tenant's share now (after
        Kueue's fair-sharing preemption; "below its share after the eviction" would forbid
        every eviction of a whole GPU on a small fleet). Priority may not buy a tenant
        more than the tenant it takes from has; the victim's lower priority keeps it from
        taking the GPUs back."""
        if not self.offer.fair:
            return True
        offer, pol = self.offer, self.policy
        mine = tenant_of(pol, job.queue, job.team)
        theirs = tenant_of(pol, r.queue, r.team)
        if mine == theirs:
            return True
        # The preemptor is charged (``offer.charge``) only once it has chosen its victims.
        return offer.share(mine) + job.gpus / offer.weight(mine) <= offer.share(theirs)

    def _budget(self, job: JobRequest, queue: str) -> float:
        """GPUs that evictions for ``job`` may take from ``queue``."""
        q = self.quota
        if q is None or queue == job.queue or q.guaranteed(queue) is None:
            return INF
        return q.borrowed(queue)

    def _preempt(self, job: JobRequest, n: int, need_release: int) -> bool:
        pol = self.policy
        if not self._may_still_preempt() or job.gpus_per_slice == 0:
            return False
        shape: ShapeKey = (job.gpus_per_slice, job.gpu_types, job.allowed_clusters)
        key = (shape, n, job.priority, job.queue, need_release > 0)
        if key in self.failed_preempt:
            return False
        self.attempts += 1
        gain = INF
        if pol.preempt_for_gain:
            # The wait saved bounds what an eviction may cost: known before the search.
            gain = self._gain(job, n, need_release)
            if gain <= 0:
                self.failed_preempt.add(key)
                return False
        q = self.quota
        cohort = q.cohort(job.queue) if q is not None else None

        def releases(r: RunningJob) -> int:
            if q is None or cohort is None or q.cohort(r.queue) != cohort:
                return 0
            return min(r.gpus, q.borrowed(r.queue))

        ev = preemption.choose(
            self._eligible(job), self._table, n, job.gpus_per_slice,
            job.gpu_types, need_release, lambda r: self._may_evict(job, r), releases,
            lambda queue: self._budget(job, queue),
        )
        if ev is None or self.victims + len(ev.victims) > pol.max_preemptions or (
            pol.preempt_for_gain and ev.cost + self._stop_cost(ev) >= gain
        ):
            self.failed_preempt.add(key)
            return False
        for v in ev.victims:
            self.evicted.add(v.job.id)
            self.preemptions.append(
                Preemption(
                    victim=v.job.id, for_job=job.id, cluster=ev.cluster,
                    slices=tuple(s.index for s in v.job.slices), gpus=v.job.gpus,
                    reason=v.reason, lost_gpu_seconds=v.cost, grace_s=pol.grace_s,
                )
            )
            if q is not None:
                q.charge(v.job.queue, -v.job.gpus)
        self.victims += len(ev.victims)
        # The preemptor counts as placed for shares and quota: its GPUs are spoken for.
        self.offer.charge(job, job.gpus)
        if q is not None:
            q.charge(job.queue, job.gpus)
            self.quota_memo.clear()
        until = self.now + pol.grace_s
        self._hold(self.by_name[ev.cluster], list(ev.nodes), until)
        self.reservations.append(Reservation(job.id, ev.cluster, ev.nodes, until))
        self.waiting[job.id] = WaitReason(
            f"{need_text(job, n)}; preempting {len(ev.victims)} job(s) on {ev.cluster}"
        )
        return True

    def _gain(self, job: JobRequest, n: int, need_release: int) -> float:
        """GPU-seconds of waiting an eviction would save ``job``: without one, it starts
        when enough of what runs ends by its declared runtime (its shadow time) and, for
        a reclaim, once the borrowers' jobs have ended; with one, after the grace."""
        grace = self.policy.grace_s
        start = self._fits_at(job, n)
        if need_release > 0 and self.quota is not None:
            q, cohort, freed = self.quota, self.quota.cohort(job.queue), 0
            at = INF
            for end, gpus in sorted(
                (r.expected_end(self.now, grace), r.gpus) for r in self.running
                if not r.stopping and r.queue != job.queue and q.cohort(r.queue) == cohort
                and q.borrowed(r.queue) > 0
            ):
                freed += gpus
                if freed >= need_release:
                    at = end
                    break
            start = max(start, at)
        return job.gpus * (start - self.now - grace)

    def _stop_cost(self, ev: preemption.Eviction) -> float:
        """GPU-seconds the victims' GPUs sit idle while they stop (``ev.cost`` is the
        work they lose since their last checkpoints)."""
        return sum(v.job.gpus for v in ev.victims) * self.policy.grace_s

    def _fits_at(self, job: JobRequest, n: int) -> float:
        """The earliest time ``job`` fits in one eligible cluster as what runs there ends
        (its shadow time), evicting nobody; infinity when no end is known."""
        if not job.gang:
            n = 1
        on = self._running_on()
        best = INF
        for fit in self._eligible(job):
            rel = self._releases.get(fit.name)
            if rel is None:  # once a pass: evictions only bring releases earlier
                rel = self._releases[fit.name] = backfill.releases(
                    (r for r, _ in on.get(fit.name, ())), fit.name, self.now,
                    self.policy.grace_s)
            sh = backfill.shadow(fit, rel, n, job.gpus_per_slice, job.gpu_types, self.now)
            if sh is not None:
                best = min(best, sh.start_at)
        return best

    def _hold(self, fit: ClusterFit, nodes: list[NodeName], until: float) -> None:
        fit.hold(nodes, until)
        if fit not in self.held:
            self.held.append(fit)
        self.max_hold = max(self.max_hold, until)

    def _reserve(self, job: JobRequest, n: int) -> Reservation | None:
        g = job.gpus_per_slice
        if not job.gang:  # independent slices start as they fit: hold room for one
            n = 1
        best: backfill.Shadow | None = None
        grace = self.policy.grace_s
        on = self._running_on()
        for fit in self._eligible(job):
            rel = backfill.releases((r for r, _ in on.get(fit.name, ())), fit.name, self.now,
                                    grace)
            sh = backfill.shadow(fit, rel, n, g, job.gpu_types, self.now)
            if sh is not None and (best is None or (sh.start_at, sh.cluster) < (
                best.start_at, best.cluster
            )):
                best = sh
        if best is None or not best.nodes:
            return None
        self._hold(self.by_name[best.cluster], list(best.nodes), best.start_at)
        res = Reservation(job.id, best.cluster, best.nodes, best.start_at)
        self.reservations.append(res)
        return res


def plan(snapshot: Snapshot, now: float) -> Plan:
    """Place what fits, in the policy's order; preempt and reserve where the policy says;
    say why the rest waits. ``now`` is the only clock this pass reads."""
    snapshot, notes, prefetch = data.narrow(snapshot, now)  # jobs reading data: filter, score
    out = _Pass(snapshot, now).run()
    return replace(out, data_notes=notes, prefetch=prefetch) if notes else out
