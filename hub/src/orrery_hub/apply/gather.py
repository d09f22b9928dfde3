"""Gather the scheduler's snapshot from the in-memory job database (``apply.jobdb``): what
waits for placement as plain ``JobRequest`` values, with the policy engine's filters,
scores and quota blocks attached, and what holds GPUs as ``RunningJob`` values. No SQL and
no store thread: the reconcile loop runs this, and ``plan``, on a worker thread.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from orrery.ids import ClusterName, JobId, NodeName, SliceIndex
from orrery.service_manifest import REPLICA_LABEL, SERVICE_LABEL
from orrery_hub.apply.jobdb import JobEntry
from orrery_hub.apply.pending import Pending
from orrery_hub.apply.queued import ACTIVE_JOB, Gathered, QueuedJob
from orrery_hub.policy import ClusterFacts, Constraints, Evaluator, JobFacts, PolicySet, Usage
from orrery_hub.policy.facts import Period
from orrery_hub.scheduler import JobRequest, RunningJob, RunningSlice
from orrery_hub.scheduler.snapshot import Policy
from orrery_hub.scheduler.waitlist import Ordered, WaitList


class Gatherer:
    """Keeps, between passes, what waits (``apply.pending``), the requests built for it,
    their offer order (the scheduler's ``WaitList``) and the policy evaluator (rebuilt
    when policies or clusters change). One pass at a time uses it."""

    def __init__(self) -> None:
        self._evaluator: Evaluator | None = None
        # Clusters to keep a job off, on top of its policies: a service's replicas kept out
        # of regions it already covers until it spans ``spread.regions`` (orrery_hub.serving),
        # keyed by (service, replica index), the labels each replica job carries.
        self.avoid: Mapping[tuple[str, str], frozenset[str]] = {}
        self.pending = Pending()
        # With no policy loaded a job asks the same thing pass after pass: its request is
        # built once, when its entry changes, and kept here and in the waiting order; a
        # pass then costs what changed. None: rebuilt whole next time (policies decide
        # each job's clusters every pass, from usage that moves with every placement).
        self._requests: dict[JobId, JobRequest] | None = None
        self._services: set[JobId] = set()  # replicas: their clusters follow ``avoid``
        self._order: WaitList | None = None
        # With policies loaded: each job's facts as the evaluator sees them, and the
        # request last built from its constraints (the evaluator answers a job with no
        # quota or budget with its profile's object, pass after pass: kept while it is).
        self._facts: dict[JobId, tuple[QueuedJob, int, JobFacts]] = {}
        self._constrained: dict[
            JobId, tuple[Constraints, frozenset[ClusterName] | None, JobRequest]
        ] = {}

    def gather(
        self,
        entries: Sequence[JobEntry] | None = None,
        *,
        now: float,
        policies: PolicySet,
        clusters: Sequence[ClusterFacts] = (),
        spend: Mapping[tuple[str, Period], float] | None = None,
        broken: Mapping[str, Exception] | None = None,
        holding: Iterable[JobEntry] = (),
        policy: Policy | None = None,
        history: Mapping[str, float] | None = None,
    ) -> Gathered:
        """The snapshot's jobs. ``entries``: every job there is (compared with what is kept
        here); None: ``pending`` was told what changed (``Pending.update``) and ``holding``
        are the jobs with open attempts. ``policy`` (with ``history``): keep the waiting
        order for it, returned as ``Gathered.order`` when it holds exactly the requests."""
        pend = self.pending
        if entries is not None:
            pend.load(entries)
            holding = [e for e in entries if e.attempts]
        pend.settle(now, broken)
        held: dict[tuple[str, str], set[int]] = defaultdict(set)
        by_team: dict[str, int] = defaultdict(int)
        by_queue: dict[str, int] = defaultdict(int)
        holders = list(holding)
        for e in holders:
            for a in e.attempts:
                held[(a.cluster, a.node)].update(a.gpus)
                if e.queued is not None:
                    by_team[e.queued.facts.team] += len(a.gpus)
                    by_queue[e.queued.queue] += len(a.gpus)
        usage = Usage(
            gpus_by_team=dict(by_team), gpus_by_queue=dict(by_queue), spend=dict(spend or {})
        )
        blocked = dict(pend.blocked)
        summaries: dict[str, str] = {}
        order: Ordered | None = None
        if policies.empty:
            try:
                requests = self._kept(clusters)
                if policy is not None:
                    order = self._ordered(policy, history)
                    requests = self._order.jobs() if self._order is not None else requests
            except BaseException:
                self._requests, self._order = None, None  # built whole next time
                raise
        else:
            self._requests = None
            try:
                requests = self._each(policies, clusters, usage, blocked, summaries)
                if policy is not None:
                    order = self._synced(requests, policy, history)
                    requests = list(self._order.jobs()) if self._order is not None else requests
                else:
                    self._order = None
            except BaseException:
                self._order, self._constrained = None, {}
                raise
        return Gathered(
            tuple(requests), dict(pend.versions), dict(held), blocked, summaries, usage,
            _running(holders), order,
        )

    def _avoided(
        self, q: QueuedJob, allowed: frozenset[ClusterName] | None,
        clusters: Sequence[ClusterFacts],
    ) -> frozenset[ClusterName] | None:
        avoid = (
            self.avoid.get((q.labels[SERVICE_LABEL], q.labels.get(REPLICA_LABEL, "")))
            if SERVICE_LABEL in q.labels
            else None
        )
        if not avoid:
            return allowed
        base = allowed if allowed is not None else frozenset(f.name for f in clusters)
        return frozenset(n for n in base if n not in avoid)

    def _kept(self, clusters: Sequence[ClusterFacts]) -> Sequence[JobRequest]:
        """The requests with no policy loaded: built for the jobs that changed (and the
        service replicas, whose clusters follow ``avoid``), kept for the rest."""
        pend, kept = self.pending, self._requests
        if kept is None:
            kept = self._requests = {}
            self._order = None
            todo: Iterable[str] = list(pend.ready)
        else:
            todo = pend.touched | self._services
        puts: list[JobRequest] = []
        for jid in todo:
            r = pend.ready.get(jid)
            job_id = JobId(jid)
            if r is None:
                if kept.pop(job_id, None) is not None and self._order is not None:
                    self._order.drop(job_id)
                self._services.discard(job_id)
                continue
            q, indices = r
            allowed = self._avoided(q, None, clusters)
            if SERVICE_LABEL in q.labels:
                self._services.add(job_id)
            old = kept.get(job_id)
            if (
                old is not None
                and old.pending == indices
                and old.allowed_clusters == allowed
                and old.priority == q.priority
            ):
                continue  # nothing it asks changed: the same object, the same place
            req = _request(q, indices, None, allowed)
            kept[job_id] = req
            puts.append(req)
        if self._order is not None and puts:
            # In submission order: new jobs then sort last and are appended, each without
            # a search (``todo`` is a set; put in its order, 12,000 new jobs took 5% of
            # the hub's time in the batch admission benchmark). The order kept is the same.
            puts.sort(key=_seq)
            for req in puts:
                self._order.put(req)
        return list(kept.values())

    def _ordered(self, policy: Policy, history: Mapping[str, float] | None) -> Ordered:
        assert self._requests is not None
        if self._order is None:
            self._order = WaitList(policy, history, self._requests.values())
        else:
            self._order.rebase(policy, history)
        return self._order.view()

    def _each(
        self,
        policies: PolicySet,
        clusters: Sequence[ClusterFacts],
        usage: Usage,
        blocked: dict[str, str],
        summaries: dict[str, str],
    ) -> list[JobRequest]:
        """The requests with policies loaded: each job's clusters, scores and blocks
        decided again this pass (they follow usage and spend)."""
        ready_by_job = list(self.pending.ready.values())
        constraints: dict[JobId, Constraints] = {}
        if ready_by_job:
            if self._evaluator is None or not self._evaluator.serves(policies, clusters):
                self._evaluator = Evaluator(policies, clusters)
                self._constrained = {}
            constraints = self._evaluator.constraints_for_pass(
                [self._facts_of(q, len(r)) for q, r in ready_by_job], usage
            )
        kept, built = self._constrained, {}
        requests: list[JobRequest] = []
        for q, indices in ready_by_job:
            c = constraints.get(q.id)
            if c is not None and c.summary:
                summaries[q.id] = c.summary
            if c is not None and c.blocked:
                blocked[q.id] = "; ".join(c.blocked)
                continue
            allowed = self._avoided(
                q, c.allowed_clusters if c is not None else None, clusters
            )
            last = kept.get(q.id)
            if last is None or last[1] != allowed or last[2].pending != indices:
                req = _request(q, indices, c, allowed)
            elif last[0] is c:
                req = last[2]  # the same answer as last pass: the same request
            else:
                # A job charged against a quota or budget gets a new answer each pass;
                # kept when equal, compared field by field only where that is cheap (the
                # per-cluster maps the same objects), so no pass compares them per job.
                req = _request(q, indices, c, allowed)
                o = last[0]
                if (
                    c is not None
                    and o.denied_reasons is c.denied_reasons
                    and o.cluster_scores is c.cluster_scores
                    and req == last[2]
                ):
                    req = last[2]
            if c is not None:
                built[q.id] = (c, allowed, req)
            requests.append(req)
        self._constrained = built
        if len(self._facts) > 2 * len(ready_by_job) + 1000:  # placed or gone: forget them
            ready = self.pending.ready
            self._facts = {j: f for j, f in self._facts.items() if j in ready}
        return requests

    def _facts_of(self, q: QueuedJob, n: int) -> JobFacts:
        kept = self._facts.get(q.id)
        if kept is not None and kept[0] is q and kept[1] == n:
            return kept[2]
        f = replace(q.facts, pending_slices=n)
        self._facts[q.id] = (q, n, f)
        return f

    def _synced(
        self, requests: list[JobRequest], policy: Policy, history: Mapping[str, float] | None
    ) -> Ordered:
        """The kept order told this pass's requests: put where they changed, dropped
        where gone, sorted whole instead when much changed (an insert moves the list)."""
        wl = self._order
        if wl is not None:
            wl.rebase(policy, history)
            fresh = [r for r in requests if wl.get(r.id) is not r]
            if len(fresh) > len(requests) // 8 + 100:
                wl = None
            else:
                wanted = {r.id for r in requests}
                for r in wl.jobs():
                    if r.id not in wanted:
                        wl.drop(r.id)
                for r in fresh:
                    wl.put(r)
        if wl is None:
            wl = WaitList(policy, history, requests)
        self._order = wl
        return wl.view()


def _seq(r: JobRequest) -> int:
    return r.seq


def _request(
    q: QueuedJob,
    indices: tuple[SliceIndex, ...],
    c: Constraints | None,
    allowed: frozenset[ClusterName] | None,
) -> JobRequest:
    return JobRequest(
        id=q.id,
        name=q.name,
        priority=q.priority,
        seq=q.seq,
        gpus_per_slice=q.gpus_per_slice,
        gpu_types=c.gpu_types if c is not None else q.gpu_types,
        pending=indices,
        gang=q.gang,
        queue=q.queue,
        labels=q.labels,
        max_runtime=q.facts.max_runtime_s,
        allowed_clusters=allowed,
        denied_reasons=c.denied_reasons if c is not None else {},
        cluster_scores=c.cluster_scores if c is not None else {},
        datasets=q.datasets,
    )


def _running(entries: Sequence[JobEntry]) -> tuple[RunningJob, ...]:
    """Jobs holding GPUs, as preemption and backfill see them. A job counts as stopping
    when it is already ordered to stop: preempted, cancelled or failed, or an epoch that
    is no longer its slice's current one."""
    out = []
    for e in entries:
        q = e.queued
        if not e.attempts or q is None:
            continue
        rows = e.attempts
        epochs = {sl.index: sl.epoch for sl in e.slices}
        preempted_for = next((a.preempted_for for a in rows if a.preempted_for), None)
        stale = any(epochs.get(a.index) != a.epoch for a in rows)
        out.append(
            RunningJob(
                id=q.id,
                queue=q.queue,
                priority=q.priority,
                slices=tuple(
                    RunningSlice(
                        SliceIndex(a.index), ClusterName(a.cluster), NodeName(a.node), a.gpus
                    )
                    for a in rows
                ),
                started_at=min(a.started_at or a.assigned_at for a in rows),
                last_checkpoint_at=e.checkpoint_at,
                max_runtime=q.facts.max_runtime_s,
                labels=q.labels,
                stopping=preempted_for is not None or stale or e.phase not in ACTIVE_JOB,
                preempted_for=JobId(preempted_for) if preempted_for else None,
            )
        )
    return tuple(out)
