"""Between the store and the pure scheduler: build its snapshot, commit its plan.

``Applier.gather`` reads what waits for placement into plain ``JobRequest`` values, with
the policy engine's filters, scores and quota blocks attached; ``commit`` writes a plan
back, checking that nothing changed underneath it (each job's ``version`` and each slice's
phase), and returns the assignments to publish. One applier per hub, called only from the
store thread, so its caches need no lock.

What a job asks for never changes after submission, so it is read from the store once and
cached (``QueuedJob``); a pass then reads only ids, versions and slice phases. Wait reasons
are written only when they change.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace

from sqlalchemy import update
from sqlmodel import Session, col, select

from orrery.ids import ClusterName, JobId, NodeName, SliceIndex
from orrery.wire import Assignment, Kill
from orrery_hub.apply.commit import commit_job, fail_unplaceable
from orrery_hub.apply.commit import preempt as preempt_victims
from orrery_hub.apply.queued import ACTIVE_JOB, Gathered, QueuedJob
from orrery_hub.policy import ClusterFacts, Constraints, Evaluator, PolicySet, Usage
from orrery_hub.policy.facts import Period
from orrery_hub.scheduler import (
    JobRequest,
    Plan,
    RunningJob,
    RunningSlice,
    SlicePlacement,
)
from orrery_hub.store.models import AttemptRow, JobRow, SliceRow

log = logging.getLogger("orrery.hub.applier")


class Applier:
    def __init__(self) -> None:
        self._jobs: dict[str, QueuedJob] = {}
        self._waiting: dict[str, dict[str, str]] = {}
        self._evaluator: Evaluator | None = None
        self._broken: dict[str, Exception] = {}  # stored jobs whose manifest no longer loads

    def job(self, s: Session, job_id: str) -> QueuedJob | None:
        q = self._jobs.get(job_id)
        if q is None:
            row = s.exec(select(JobRow).where(JobRow.id == job_id)).first()
            if row is None:
                return None
            try:
                q = self._jobs[job_id] = QueuedJob.of(row)
            except ValueError as exc:
                self._broken[job_id] = exc
                return None
        return q

    def _load(self, s: Session, ids: Sequence[str]) -> None:
        missing = [i for i in ids if i not in self._jobs]
        for i in range(0, len(missing), 500):
            for row in s.exec(select(JobRow).where(col(JobRow.id).in_(missing[i : i + 500]))):
                try:
                    self._jobs[row.id] = QueuedJob.of(row)
                except ValueError as exc:  # stored before today's limits: failed in gather
                    self._broken[row.id] = exc

    def forget(self, job_ids: Sequence[str]) -> None:
        for j in job_ids:
            self._jobs.pop(j, None)
            self._waiting.pop(j, None)

    # ---- gather -------------------------------------------------------------------------

    def held_by_job(self, s: Session) -> dict[str, int]:
        """GPUs each job holds through its open attempts."""
        out: dict[str, int] = defaultdict(int)
        for jid, gpus in s.exec(
            select(AttemptRow.job_id, AttemptRow.gpus).where(col(AttemptRow.ended_at).is_(None))
        ):
            out[jid] += len(gpus)
        return dict(out)

    def held(self, s: Session) -> dict[tuple[str, str], set[int]]:
        held: dict[tuple[str, str], set[int]] = defaultdict(set)
        for cluster, node, gpus in s.exec(
            select(AttemptRow.cluster, AttemptRow.node, AttemptRow.gpus).where(
                col(AttemptRow.ended_at).is_(None)
            )
        ):
            held[(cluster, node)].update(gpus)
        return dict(held)

    def gather(
        self,
        s: Session,
        *,
        now: float,
        policies: PolicySet,
        clusters: Sequence[ClusterFacts] = (),
        spend: Mapping[tuple[str, Period], float] | None = None,
    ) -> Gathered:
        held: dict[tuple[str, str], set[int]] = defaultdict(set)
        stopping: dict[tuple[str, int], tuple[int, str]] = {}
        # Open attempts are the running slices: few, next to the queue.
        open_attempts = list(s.exec(select(AttemptRow).where(col(AttemptRow.ended_at).is_(None))))
        open_rows = [(a.job_id, a.index, a.epoch, a.cluster, a.node, a.gpus) for a in open_attempts]
        versions = {
            jid: v
            for jid, v in s.exec(
                select(JobRow.id, JobRow.version).where(col(JobRow.phase).in_(ACTIVE_JOB))
            )
        }
        pending: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for jid, index, not_before in s.exec(
            select(SliceRow.job_id, SliceRow.index, SliceRow.not_before).where(
                SliceRow.phase == "Pending"
            )
        ):
            if jid in versions:
                pending[jid].append((index, not_before))
        self._load(s, [*pending, *{r[0] for r in open_rows}])
        for jid, exc in list(self._broken.items()):
            del self._broken[jid]
            if jid in versions:
                self._fail_unplaceable(s, jid, exc, now=now)
            pending.pop(jid, None)

        by_team: dict[str, int] = defaultdict(int)
        by_queue: dict[str, int] = defaultdict(int)
        for jid, index, epoch, cluster, node, gpus in open_rows:
            held[(cluster, node)].update(gpus)
            stopping[(jid, index)] = (epoch, cluster)
            q = self._jobs.get(jid)
            if q is not None:
                by_team[q.facts.team] += len(gpus)
                by_queue[q.queue] += len(gpus)
        usage = Usage(
            gpus_by_team=dict(by_team), gpus_by_queue=dict(by_queue), spend=dict(spend or {})
        )

        ready_by_job: list[tuple[QueuedJob, tuple[SliceIndex, ...]]] = []
        blocked: dict[str, str] = {}
        for jid, slices in pending.items():
            q = self._jobs.get(jid)
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
            requests.append(
                JobRequest(
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
                    allowed_clusters=c.allowed_clusters if c is not None else None,
                    denied_reasons=c.denied_reasons if c is not None else {},
                    cluster_scores=c.cluster_scores if c is not None else {},
                )
            )
        running = self._running(s, open_attempts)
        live = set(versions) | {r[0] for r in open_rows}
        if len(self._jobs) > len(live) + 1000:  # finished jobs: nothing will ask again
            for jid in [j for j in self._jobs if j not in live]:
                self.forget([jid])
        return Gathered(tuple(requests), versions, dict(held), blocked, summaries, usage, running)

    def _running(self, s: Session, attempts: list[AttemptRow]) -> tuple[RunningJob, ...]:
        """Jobs holding GPUs, as preemption and backfill see them. A job counts as stopping
        when it is already ordered to stop: preempted, cancelled or failed, or an epoch that
        is no longer its slice's current one."""
        if not attempts:
            return ()
        by_job: dict[str, list[AttemptRow]] = defaultdict(list)
        for a in attempts:
            by_job[a.job_id].append(a)
        ids = list(by_job)
        jobs = {
            jid: (phase, checkpoint_at)
            for jid, phase, checkpoint_at in s.exec(
                select(JobRow.id, JobRow.phase, JobRow.checkpoint_at).where(col(JobRow.id).in_(ids))
            )
        }
        epochs = {
            (jid, index): epoch
            for jid, index, epoch in s.exec(
                select(SliceRow.job_id, SliceRow.index, SliceRow.epoch).where(
                    col(SliceRow.job_id).in_(ids)
                )
            )
        }
        out = []
        for jid, rows in by_job.items():
            q = self._jobs.get(jid)
            if q is None or jid not in jobs:
                continue
            phase, checkpoint_at = jobs[jid]
            preempted_for = next((a.preempted_for for a in rows if a.preempted_for), None)
            stale = any(epochs.get((jid, a.index)) != a.epoch for a in rows)
            out.append(
                RunningJob(
                    id=q.id,
                    queue=q.queue,
                    priority=q.priority,
                    slices=tuple(
                        RunningSlice(
                            SliceIndex(a.index),
                            ClusterName(a.cluster),
                            NodeName(a.node),
                            tuple(a.gpus),
                        )
                        for a in rows
                    ),
                    started_at=min(a.started_at or a.assigned_at for a in rows),
                    last_checkpoint_at=checkpoint_at,
                    max_runtime=q.facts.max_runtime_s,
                    labels=q.labels,
                    stopping=preempted_for is not None or stale or phase not in ACTIVE_JOB,
                    preempted_for=JobId(preempted_for) if preempted_for else None,
                )
            )
        return tuple(out)

    def preempt(self, s: Session, plan: Plan, *, now: float, digest: str) -> list[tuple[str, Kill]]:
        return preempt_victims(s, plan, now=now, digest=digest)

    def commit(
        self,
        s: Session,
        plan: Plan,
        *,
        versions: dict[str, int],
        addresses: Mapping[str, str],
        gpu_types: Mapping[tuple[str, str], str | None],
        now: float,
        digest: str,
    ) -> list[tuple[str, Assignment]]:
        """Write the plan; skip any job that changed since the snapshot. Returns orders."""
        by_job: dict[JobId, list[SlicePlacement]] = defaultdict(list)
        for p in plan.placements:
            by_job[p.job].append(p)
        orders: list[tuple[str, Assignment]] = []
        for jid, placements in by_job.items():
            job_id = str(jid)
            # Each job in its own savepoint: one that fails (a row the database or the wire
            # refuses) is rolled back alone and marked Failed; the pass goes on for the rest.
            try:
                with s.begin_nested():
                    placed = commit_job(
                        s, job_id, placements, versions, addresses, gpu_types, now, digest
                    )
                    s.flush()
            except Exception as exc:
                self._fail_unplaceable(s, job_id, exc, now=now)
                continue
            if placed:
                self._waiting.pop(job_id, None)
            orders.extend(placed)
        return orders

    def _fail_unplaceable(self, s: Session, job_id: str, exc: Exception, *, now: float) -> None:
        self.forget([job_id])
        fail_unplaceable(s, job_id, exc, now=now)

    def record_waiting(self, s: Session, plan: Plan, g: Gathered) -> None:
        """Store why each unplaced job waits, where that changed since the last pass."""
        reasons: dict[str, dict[str, str]] = {}
        for waiting_id, w in plan.waiting.items():
            summary = g.summaries.get(waiting_id, w.summary)
            reasons[str(waiting_id)] = {"": summary, **{str(k): v for k, v in w.clusters.items()}}
        for blocked_id, why in g.blocked.items():
            reasons.setdefault(blocked_id, {"": why})
        for job_id, r in reasons.items():
            if self._waiting.get(job_id) == r:
                continue
            s.exec(
                update(JobRow)
                .where(col(JobRow.id) == job_id, col(JobRow.phase).in_(ACTIVE_JOB))
                .values(waiting=r, reason=r[""])
            )
            self._waiting[job_id] = r


ClusterAddresses = dict[ClusterName, str]
