"""Preemption and reservations within one pass: which running jobs a waiting one may stop,
whether the wait it saves outweighs the work lost, and the EASY-backfill reservation when
nothing may be stopped. Pure, like the rest of the scheduler."""

from __future__ import annotations

from orrery.ids import ClusterName, NodeName
from orrery_hub.scheduler import backfill, preemption
from orrery_hub.scheduler.fairness import tenant_of
from orrery_hub.scheduler.fit import ClusterFit
from orrery_hub.scheduler.passstate import INF, PassState, ShapeKey
from orrery_hub.scheduler.plan import Preemption, Reservation, WaitReason
from orrery_hub.scheduler.reasons import need_text
from orrery_hub.scheduler.snapshot import JobRequest, RunningJob, RunningSlice


class Evicting(PassState):
    """The preempting half of a pass (``cycle._Pass`` is the placing half)."""

    def _running_on(self) -> dict[ClusterName, list[tuple[RunningJob, tuple[RunningSlice, ...]]]]:
        """Running jobs per cluster with their slices there; built on first need."""
        if self._on is None:
            on: dict[ClusterName, list[tuple[RunningJob, tuple[RunningSlice, ...]]]] = {}
            for r in self.running:
                sl = r.slices
                if len(sl) == 1:  # most jobs: one slice, one cluster
                    got = on.get(sl[0].cluster)
                    if got is None:
                        got = on[sl[0].cluster] = []
                    got.append((r, sl))
                    continue
                by: dict[ClusterName, list[RunningSlice]] = {}
                for s in sl:
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
                self._running_on().get(cluster, ()), self.now, self.policy.min_run_s
            )
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
            self._eligible(job),
            self._table,
            n,
            job.gpus_per_slice,
            job.gpu_types,
            need_release,
            lambda r: self._may_evict(job, r),
            releases,
            lambda queue: self._budget(job, queue),
        )
        if (
            ev is None
            or self.victims + len(ev.victims) > pol.max_preemptions
            or (pol.preempt_for_gain and ev.cost + self._stop_cost(ev) >= gain)
        ):
            self.failed_preempt.add(key)
            return False
        for v in ev.victims:
            self.evicted.add(v.job.id)
            self.preemptions.append(
                Preemption(
                    victim=v.job.id,
                    for_job=job.id,
                    cluster=ev.cluster,
                    slices=tuple(s.index for s in v.job.slices),
                    gpus=v.job.gpus,
                    reason=v.reason,
                    lost_gpu_seconds=v.cost,
                    grace_s=pol.grace_s,
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
                (r.expected_end(self.now, grace), r.gpus)
                for r in self.running
                if not r.stopping
                and r.queue != job.queue
                and q.cohort(r.queue) == cohort
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
        at, _ = backfill.earliest(
            self._eligible(job), self._fleet_releases(), n, job.gpus_per_slice,
            job.gpu_types, self.now,
        )
        return at

    def _fleet_releases(self) -> backfill.Releases:
        """When each running job frees its GPUs, soonest first. Once a pass: it reads only
        the snapshot's running jobs (an eviction this pass does not change them), ``now``
        and the grace."""
        rel = self._rel
        if rel is None:
            rel = self._rel = backfill.Releases(self.running, self.now, self.policy.grace_s)
        return rel

    def _hold(self, fit: ClusterFit, nodes: list[NodeName], until: float) -> None:
        fit.hold(nodes, until)
        if fit not in self.held:
            self.held.append(fit)
        self.max_hold = max(self.max_hold, until)

    def _reserve(self, job: JobRequest, n: int) -> Reservation | None:
        """Hold, for ``job``, the nodes of the cluster where it fits soonest (the first by
        name among equals) from the time it fits there."""
        g = job.gpus_per_slice
        if not job.gang:  # independent slices start as they fit: hold room for one
            n = 1
        rel = self._fleet_releases()
        at, found = backfill.earliest(self._eligible(job), rel, n, g, job.gpu_types, self.now)
        if not found:
            return None
        fit = self.by_name[min(found)]
        # Its releases up to the time it fits: all that ``shadow`` reads of them.
        best = backfill.shadow(fit, rel.until(fit.name, at), n, g, job.gpu_types, self.now)
        if best is None or not best.nodes:
            return None
        self._hold(self.by_name[best.cluster], list(best.nodes), best.start_at)
        res = Reservation(job.id, best.cluster, best.nodes, best.start_at)
        self.reservations.append(res)
        return res
