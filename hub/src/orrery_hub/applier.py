"""Between the store and the pure scheduler: build its snapshot, commit its plan.

``gather`` reads what waits for placement into plain ``JobRequest`` values; ``commit``
writes a plan back, checking that nothing changed underneath it (each job's ``version``
and each slice's phase), and returns the assignments to publish. One applier, one
transaction per pass: the scheduler never sees the database.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlmodel import Session, col, select

from orrery.ids import ClusterName, JobId, SliceIndex
from orrery.manifest import RestartPolicy
from orrery.wire import Assignment
from orrery_hub.reconcile import assignment_for, master_port
from orrery_hub.scheduler import JobRequest, Plan, SlicePlacement
from orrery_hub.store.jobs import add_event
from orrery_hub.store.models import AttemptRow, JobRow, SliceRow


@dataclass(frozen=True)
class Gathered:
    requests: tuple[JobRequest, ...]
    versions: dict[str, int]
    held: dict[tuple[str, str], set[int]]  # GPUs held by open attempts, per (cluster, node)
    blocked: dict[str, str]  # job -> why it is not offered to the scheduler this pass


def gather(s: Session, *, now: float) -> Gathered:
    held: dict[tuple[str, str], set[int]] = defaultdict(set)
    open_slices: dict[tuple[str, int], AttemptRow] = {}
    for a in s.exec(select(AttemptRow).where(col(AttemptRow.ended_at).is_(None))):
        held[(a.cluster, a.node)].update(a.gpus)
        open_slices[(a.job_id, a.index)] = a
    jobs = {
        j.id: j for j in s.exec(select(JobRow).where(col(JobRow.phase).in_(("Pending", "Running"))))
    }
    pending: dict[str, list[SliceRow]] = defaultdict(list)
    if jobs:
        for sl in s.exec(
            select(SliceRow).where(
                SliceRow.phase == "Pending", col(SliceRow.job_id).in_(list(jobs))
            )
        ):
            pending[sl.job_id].append(sl)
    requests = []
    blocked: dict[str, str] = {}
    for job_id, slices in pending.items():
        job = jobs[job_id]
        spec = job.manifest["spec"]
        gang = spec.get("restartPolicy", RestartPolicy.GANG.value) == RestartPolicy.GANG.value
        ready: list[SliceIndex] = []
        for sl in slices:
            stopping = open_slices.get((job_id, sl.index))
            if stopping is not None:
                blocked[job_id] = (
                    f"waiting for slice {sl.index} epoch {stopping.epoch} to "
                    f"stop on {stopping.cluster}"
                )
            elif sl.not_before > now:
                blocked[job_id] = f"retry backoff: {sl.not_before - now:.1f}s left"
            else:
                ready.append(SliceIndex(sl.index))
        if gang and len(ready) < len(slices):
            continue  # a gang is placed whole, once every member is free to go
        if not ready:
            continue
        gpu_type = spec.get("gpuType")
        types = (
            None
            if gpu_type is None
            else frozenset([gpu_type])
            if isinstance(gpu_type, str)
            else frozenset(gpu_type)
        )
        requests.append(
            JobRequest(
                id=JobId(job.id),
                name=job.name,
                priority=job.priority,
                seq=job.seq or 0,
                gpus_per_slice=int(spec.get("gpusPerSlice", 1)),
                gpu_types=types,
                pending=tuple(sorted(ready)),
                gang=gang,
                queue=job.queue,
                labels=dict(job.labels),
            )
        )
    versions = {j.id: j.version for j in jobs.values()}
    return Gathered(tuple(requests), versions, dict(held), blocked)


def commit(
    s: Session,
    plan: Plan,
    *,
    versions: dict[str, int],
    addresses: dict[str, str],
    now: float,
) -> list[tuple[str, Assignment]]:
    """Write the plan; skip any job that changed since the snapshot. Returns orders."""
    by_job: dict[str, list[SlicePlacement]] = defaultdict(list)
    for p in plan.placements:
        by_job[p.job].append(p)
    orders: list[tuple[str, Assignment]] = []
    for job_id, placements in by_job.items():
        job = s.exec(select(JobRow).where(JobRow.id == job_id)).first()
        if (
            job is None
            or job.version != versions.get(job_id)
            or job.phase not in ("Pending", "Running")
        ):
            continue  # changed underneath the pass (e.g. cancelled): the next pass decides
        slices = {sl.index: sl for sl in s.exec(select(SliceRow).where(SliceRow.job_id == job_id))}
        if any(slices[p.index].phase != "Pending" for p in placements):
            continue
        # Rank 0's address is the rendezvous for the whole gang.
        zero = next((p for p in placements if p.index == 0), None)
        if zero is not None:
            m_addr = addresses.get(zero.cluster, "127.0.0.1")
            m_port = master_port(job_id, slices[0].epoch)
        else:
            m_addr = slices[0].master_addr or "127.0.0.1"
            m_port = slices[0].master_port or master_port(job_id, slices[0].epoch)
        for p in placements:
            sl = slices[p.index]
            sl.phase = "Assigned"
            sl.cluster = p.cluster
            sl.node = p.node
            sl.gpus = list(p.gpus)
            sl.master_addr = m_addr
            sl.master_port = m_port
            sl.attempts += 1
            sl.updated_at = now
            s.add(sl)
            s.add(
                AttemptRow(
                    job_id=job_id,
                    index=p.index,
                    epoch=sl.epoch,
                    cluster=p.cluster,
                    node=p.node,
                    gpus=list(p.gpus),
                    assigned_at=now,
                )
            )
            orders.append((p.cluster, assignment_for(job, sl)))
        clusters = sorted({p.cluster for p in placements})
        add_event(
            s,
            at=now,
            kind="Placed",
            job_id=job_id,
            message=f"{len(placements)} slice(s) placed on {', '.join(clusters)}",
        )
        job.waiting = None
        job.reason = None
        job.version += 1
        s.add(job)
    return orders


def record_waiting(s: Session, plan: Plan, blocked: dict[str, str], placed: set[str]) -> None:
    """Store why each unplaced job waits, where it changed."""
    reasons: dict[str, dict[str, str]] = {}
    for jid, w in plan.waiting.items():
        reasons[str(jid)] = {"": w.summary, **{str(k): v for k, v in w.clusters.items()}}
    for job_id, why in blocked.items():
        if job_id not in reasons:
            reasons[job_id] = {"": why}
    if not reasons:
        return
    for job in s.exec(select(JobRow).where(col(JobRow.id).in_(list(reasons)))):
        if job.id in placed or job.phase not in ("Pending", "Running"):
            continue
        r = reasons[job.id]
        if job.waiting != r:
            job.waiting = r
            job.reason = r[""]
            s.add(job)


ClusterAddresses = dict[ClusterName, str]
