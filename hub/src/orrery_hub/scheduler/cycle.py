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
   same shape fail too: remembered, not retried; and a job alike in everything the search
   reads to one that failed, with nothing placed, preempted or reserved since, is told
   the same reason without a search (``_alike``). Once no GPU is free, only jobs that may
   preempt are still offered; the rest only need their reasons (``_tail``).
"""

from __future__ import annotations

from dataclasses import replace

from orrery.ids import ClusterName, SliceIndex
from orrery_hub.scheduler import data, types, waitlist
from orrery_hub.scheduler.fairness import order
from orrery_hub.scheduler.fit import ClusterFit
from orrery_hub.scheduler.passstate import INF, ShapeKey
from orrery_hub.scheduler.plan import Plan, SlicePlacement, WaitReason, WaitReasons
from orrery_hub.scheduler.reasons import need_text, why
from orrery_hub.scheduler.snapshot import JobRequest, Snapshot
from orrery_hub.scheduler.tail import KeptTail

__all__ = ["order", "plan"]


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


class _Pass(KeptTail):
    """One pass: offer the waiting jobs in order and place what fits (see the module doc)."""

    # --- the pass -----------------------------------------------------------------------

    def run(self) -> Plan:
        offered = self.offered if self.order is not None else None
        # With a kept order, the walk may end early once every job left is known to fail.
        settle = (
            offered is not None and self.remember_failures and not self.policy.head_of_line
        )
        # A check looks at up to every kind: run one only after as many jobs were offered
        # since the last as that one looked at, so checks cost at most what the walk does
        # (a queue of jobs each its own kind made the walk quadratic otherwise).
        noted, since, cost = 0, 0, 0
        for job in self.offer:
            if self.free_left <= 0:
                self._tail(job)
                break
            if offered is not None:
                offered.add(job.id)
            self._one(job)
            if self.policy.head_of_line and job.id in self.waiting:
                if not self._rest_by_shape({}):
                    self._wait_all(self.offer.rest())
                break
            since += 1
            if settle and self.failures_noted != noted and since >= cost:
                noted, since = self.failures_noted, 0
                done, cost = self._rest_known()
                if done:
                    break
        return Plan(
            placements=tuple(self.placements),
            waiting=WaitReasons(self.waiting, self.waiting_groups),
            preemptions=tuple(self.preemptions),
            reservations=tuple(self.reservations),
            backfilled=frozenset(self.backfilled),
        )

    def _tail(self, first: JobRequest) -> None:
        """No GPU is free: only a job that may preempt can still get one. Offer those (in
        the order ``Offer.rest`` gives, least-served tenant first, from ``first``) while
        preemption searches are left; the rest only need their reasons, written once the
        pass is done (so they describe the capacity it leaves)."""
        if not self._may_still_preempt():
            if not self._rest_by_shape({}):
                self._wait_all([first, *self.offer.rest()])
            return
        if self._tail_kept(first):  # the same, found without a walk over every job
            return
        lowest = min(
            (r.priority for r in self.running if r.preemptible and not r.stopping),
            default=None,
        )
        q = self.quota
        # Jobs alike in shape, priority and queue get the same answer until a preemption
        # succeeds (which changes quotas and victims): ask once per kind.
        dead: set[tuple[object, ...]] = set()
        later: list[JobRequest] = []
        for job in [first, *self.offer.rest()]:
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
            later.append(job)
        self._wait_all(later)

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

    # Jobs alike in all a failing ``_one`` reads of them fail alike until the pass changes
    # something (a placement, preemption or reservation): remembered, not searched again.
    # A long queue that fits nowhere (a GPU type no cluster has, while others sit free)
    # cost a placement, preemption and reservation search per job per pass: with 100,000
    # waiting, most of the hub's time. (The reference pass in the tests turns it off.)
    remember_failures = True

    def _alike(self, job: JobRequest) -> waitlist.Alike | None:
        """The key of jobs that fail alike, or None: this one must be searched."""
        if not self.remember_failures or job.cluster_scores or job.id in self.inflight:
            return None
        changes = (len(self.placements), len(self.preemptions), len(self.reservations))
        if changes != self.failed_at:
            self.failed_kinds.clear()
            self.failed_at = changes
        return waitlist.alike_key(job)

    def _one(self, job: JobRequest) -> None:
        n = len(job.pending)
        if n == 0:
            return
        kind = self._alike(job)
        if kind is not None:
            known = self.failed_kinds.get(kind)
            if known is not None:
                self.waiting[job.id] = known
                return
        self._search(job, n)
        if kind is not None and (len(self.placements), len(self.preemptions),
                                 len(self.reservations)) == self.failed_at:  # fmt: skip
            failed = self.waiting.get(job.id)
            if failed is not None:
                self.failed_kinds[kind] = failed
                self.failures_noted += 1

    def _search(self, job: JobRequest, n: int) -> None:
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
            kept = self.order.single_type if self.order is not None else None
            self._rank = types.rank(self.fits, self.jobs, kept)
        return self._rank or None

    def _known_lent_failure(self, job: JobRequest, n: int, end: float) -> bool:
        """Held nodes are lent to jobs ending by the hold's end; a job ending earlier may
        borrow at least as much, so a failure with lent nodes speaks for later ends too."""
        shape: ShapeKey = (job.gpus_per_slice, job.gpu_types, job.allowed_clusters)
        need = n if job.gang else 1
        return any(nd <= need and e <= end for nd, e in self.no_fit_lent.get(shape, ()))

    def _chosen(
        self, job: JobRequest, n: int, prefer: list[frozenset[str]]
    ) -> list[tuple[ClusterFit, int]]:
        """``_choose`` over the eligible clusters. When nothing but the fit ranks them (no
        scores, no type preference), the tightest that holds the job whole comes from
        ``ranked`` without asking every cluster: a hundred questions a job, before."""
        if job.gpus_per_slice > 0 and not prefer and not job.cluster_scores:
            hit = self._ranked(job).tightest(n)
            if hit is not None:
                return [(hit[0], n)]
        candidates = [
            (c, k)
            for c in self._eligible(job)
            if (k := c.slices_fit(job.gpus_per_slice, job.gpu_types)) > 0
        ]
        return _choose(job, n, candidates, prefer)

    def _place(self, job: JobRequest, n: int, lent: bool) -> bool:
        """Place what fits; True when the job needs nothing more this pass."""
        shape: ShapeKey = (job.gpus_per_slice, job.gpu_types, job.allowed_clusters)
        need = n if job.gang else 1
        if not lent and self.no_fit.get(shape, 1 << 30) <= need:
            return False
        end = self.now + (job.max_runtime or 0.0) if lent else INF
        flexible = job.gpu_types is None or len(job.gpu_types) > 1
        rank = self._type_rank() if flexible and job.gpus_per_slice > 0 else None
        prefer = types.preferred(job, rank) if rank is not None else []
        chosen = self._chosen(job, n, prefer)
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



def plan(snapshot: Snapshot, now: float) -> Plan:
    """Place what fits, in the policy's order; preempt and reserve where the policy says;
    say why the rest waits. ``now`` is the only clock this pass reads."""
    snapshot, notes, prefetch = data.narrow(snapshot, now)  # jobs reading data: filter, score
    out = _Pass(snapshot, now).run()
    return replace(out, data_notes=notes, prefetch=prefetch) if notes else out
