"""Gather the scheduler's snapshot from the in-memory job database (``apply.jobdb``): what
waits for placement as plain ``JobRequest`` values, with the policy engine's filters,
scores and quota blocks attached, and what holds GPUs as ``RunningJob`` values. No SQL and
no store thread: the reconcile loop runs this, and ``plan``, on a worker thread.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace

from orrery.ids import ClusterName, JobId, NodeName, SliceIndex
from orrery.service_manifest import REPLICA_LABEL, SERVICE_LABEL
from orrery_hub.apply.jobdb import JobEntry
from orrery_hub.apply.queued import ACTIVE_JOB, Gathered, QueuedJob
from orrery_hub.policy import ClusterFacts, Constraints, Evaluator, PolicySet, Usage
from orrery_hub.policy.facts import Period
from orrery_hub.scheduler import JobRequest, RunningJob, RunningSlice


class Gatherer:
    """Keeps the policy evaluator between passes (rebuilt when policies or clusters change).
    One pass at a time uses it."""

    def __init__(self) -> None:
        self._evaluator: Evaluator | None = None
        # Clusters to keep a job off, on top of its policies: a service's replicas kept out
        # of regions it already covers until it spans ``spread.regions`` (orrery_hub.serving),
        # keyed by (service, replica index), the labels each replica job carries.
        self.avoid: Mapping[tuple[str, str], frozenset[str]] = {}
        # A job no policy constrains asks the same thing pass after pass: its request is
        # built once and kept while its slices waiting stay the same (a long queue's pass
        # then costs a lookup per job, not an object).
        self._requests: dict[JobId, tuple[QueuedJob, tuple[SliceIndex, ...], JobRequest]] = {}

    def gather(
        self,
        entries: Sequence[JobEntry],
        *,
        now: float,
        policies: PolicySet,
        clusters: Sequence[ClusterFacts] = (),
        spend: Mapping[tuple[str, Period], float] | None = None,
        broken: Mapping[str, Exception] | None = None,
    ) -> Gathered:
        held: dict[tuple[str, str], set[int]] = defaultdict(set)
        stopping: dict[tuple[str, int], tuple[int, str]] = {}
        versions = {e.id: e.version for e in entries if e.active}
        pending: dict[str, list[tuple[int, float]]] = {}
        for e in entries:
            if e.active and (broken is None or e.id not in broken):
                waiting = [(sl.index, sl.not_before) for sl in e.slices if sl.phase == "Pending"]
                if waiting:
                    pending[e.id] = waiting
        queued = {e.id: e.queued for e in entries if e.queued is not None}

        by_team: dict[str, int] = defaultdict(int)
        by_queue: dict[str, int] = defaultdict(int)
        for e in entries:
            for a in e.attempts:
                held[(a.cluster, a.node)].update(a.gpus)
                stopping[(e.id, a.index)] = (a.epoch, a.cluster)
                if e.queued is not None:
                    by_team[e.queued.facts.team] += len(a.gpus)
                    by_queue[e.queued.queue] += len(a.gpus)
        usage = Usage(
            gpus_by_team=dict(by_team), gpus_by_queue=dict(by_queue), spend=dict(spend or {})
        )

        ready_by_job: list[tuple[QueuedJob, tuple[SliceIndex, ...]]] = []
        blocked: dict[str, str] = {}
        for jid, slices in pending.items():
            q = queued.get(jid)
            if q is None:
                continue
            ready: list[SliceIndex] = []
            for index, not_before in slices:
                old = stopping.get((jid, index))
                if old is not None:
                    blocked[jid] = f"waiting for slice {index} epoch {old[0]} to stop on {old[1]}"
                elif not_before > now:
                    blocked[jid] = f"retry backoff: {not_before - now:.1f}s left"
                else:
                    ready.append(SliceIndex(index))
            if (q.gang and len(ready) < len(slices)) or not ready:
                continue  # a gang is placed whole, once every member is free to go
            ready_by_job.append((q, tuple(sorted(ready))))

        constraints: dict[JobId, Constraints] = {}
        if not policies.empty and ready_by_job:
            if self._evaluator is None or not self._evaluator.serves(policies, clusters):
                self._evaluator = Evaluator(policies, clusters)
            facts = [replace(q.facts, pending_slices=len(r)) for q, r in ready_by_job]
            constraints = self._evaluator.constraints_for_pass(facts, usage)

        requests: list[JobRequest] = []
        summaries: dict[str, str] = {}
        for q, indices in ready_by_job:
            c = constraints.get(q.id)
            if c is not None and c.summary:
                summaries[q.id] = c.summary
            if c is not None and c.blocked:
                blocked[q.id] = "; ".join(c.blocked)
                continue
            allowed = c.allowed_clusters if c is not None else None
            avoid = (
                self.avoid.get((q.labels[SERVICE_LABEL], q.labels.get(REPLICA_LABEL, "")))
                if SERVICE_LABEL in q.labels
                else None
            )
            if avoid:
                base = allowed if allowed is not None else frozenset(f.name for f in clusters)
                allowed = frozenset(n for n in base if n not in avoid)
            reusable = c is None and not avoid  # nothing but the job itself shapes it
            if reusable:
                kept = self._requests.get(q.id)
                if kept is not None and kept[0] is q and kept[1] == indices:
                    requests.append(kept[2])
                    continue
            req = JobRequest(
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
            if reusable:
                self._requests[q.id] = (q, indices, req)
            requests.append(req)
        if len(self._requests) > 2 * len(requests) + 1000:  # placed or gone: forget them
            wanted = {r.id for r in requests}
            self._requests = {j: v for j, v in self._requests.items() if j in wanted}
        running = _running(entries)
        return Gathered(tuple(requests), versions, dict(held), blocked, summaries, usage, running)


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
