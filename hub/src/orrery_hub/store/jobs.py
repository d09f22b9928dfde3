"""Write jobs: submit (one, or many in bulk) and cancel. Reads are ``store.queries``."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from orrery.errors import Conflict
from orrery.manifest import JobManifest
from orrery.resources import (
    FINAL_JOB_PHASES,
    JobPublic,
    JobStatus,
    SliceView,
    Waiting,
)
from orrery_hub.store.manifests import ManifestDumps
from orrery_hub.store.models import AttemptRow, EventRow, JobRow, SliceRow
from orrery_hub.store.queries import get_row, slices_of


def add_event(
    s: Session,
    *,
    at: float,
    kind: str,
    message: str,
    job_id: str | None = None,
    index: int | None = None,
    epoch: int | None = None,
    cluster: str | None = None,
) -> None:
    s.add(
        EventRow(
            at=at,
            kind=kind,
            message=message,
            job_id=job_id,
            index=index,
            epoch=epoch,
            cluster=cluster,
        )
    )


def new_ids(s: Session, names: list[str], *, check: bool = True) -> list[str]:
    """A fresh job id for each name (``<name>-<6 hex>``), unused in the store and among
    themselves, found with one query per round rather than one per job. ``check=False``:
    distinct among themselves only, for a writer whose insert refuses a taken id
    (``store.pipelined``)."""
    out = [""] * len(names)
    todo = list(range(len(names)))
    taken: set[str] = set()
    while todo:
        drawn = suffixes(len(todo))
        cands = {i: f"{names[i][:50]}-{h}" for i, h in zip(todo, drawn, strict=True)}
        values = list(cands.values())
        used: set[str] = set()
        for k in range(0, len(values) if check else 0, 500):
            used.update(_taken(s, values[k : k + 500]))
        todo = []
        for i, c in cands.items():
            if c in used or c in taken:
                todo.append(i)
            else:
                taken.add(c)
                out[i] = c
    return out


def suffixes(n: int) -> list[str]:
    """``n`` random id suffixes (6 hex digits), from one read of the system's random
    source rather than one each."""
    text = secrets.token_hex(3 * n)
    return [text[k : k + 6] for k in range(0, 6 * n, 6)]


def _taken(s: Session, ids: list[str]) -> list[str]:
    """Which of ``ids`` the store holds. Plain SQL: building and compiling a select with
    an IN list cost more than the query, once per admission transaction."""
    conn = s.connection()
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    jobs = JobRow.__tablename__
    sql = f"SELECT id FROM {jobs} WHERE id IN ({', '.join([mark] * len(ids))})"
    return [row[0] for row in conn.exec_driver_sql(sql, tuple(ids))]


def add_job(
    s: Session, manifest: JobManifest, *, job_id: str, now: float, checkpoint_root: Path
) -> tuple[JobRow, list[SliceRow]]:
    """Stage a job's rows (job, slices, its Submitted event); the transaction stores them."""
    spec = manifest.spec
    checkpoint_dir = spec.checkpoint_dir or str(checkpoint_root / job_id)
    job = JobRow(
        id=job_id,
        name=manifest.metadata.name,
        queue=spec.queue,
        team=manifest.team,
        priority=spec.priority,
        labels=dict(manifest.metadata.labels),
        manifest=manifest.model_dump(mode="json", by_alias=True, exclude_none=True),
        created_at=now,
        checkpoint_dir=checkpoint_dir,
    )
    s.add(job)
    slices = [SliceRow(job_id=job_id, index=i, updated_at=now) for i in range(spec.slices)]
    s.add_all(slices)
    add_event(
        s,
        at=now,
        kind="Submitted",
        job_id=job_id,
        message=f"{spec.slices} slice(s) × {spec.gpus_per_slice} GPU(s), queue {spec.queue}",
    )
    return job, slices


@dataclass(frozen=True)
class NewJob:
    """A job's first rows as plain values, for a bulk insert (ORM objects cost ~0.2 ms each
    to build and flush: more than the rest of an admission)."""

    job: dict[str, Any]
    slices: list[dict[str, Any]]
    event: dict[str, Any]
    manifest_json: str  # job["manifest"] as the column's JSON type encodes it


def checkpoint_prefix(root: Path) -> str:
    """What ``new_job`` puts before a job's id for its checkpoint directory: the text of
    ``root / job_id`` for any id (a DNS label and six hex digits: one plain part), found
    once rather than joined through ``pathlib`` for each job."""
    return str(root / "_")[:-1]


def new_job(
    manifest: JobManifest,
    *,
    job_id: str,
    now: float,
    checkpoint_prefix: str,
    dumps: ManifestDumps,
    reason: str | None = None,
) -> NewJob:
    """``checkpoint_prefix``: ``checkpoint_prefix(root)`` of the hub's checkpoint root;
    ``dumps``: the transaction's (specs alike dumped once)."""
    spec = manifest.spec
    stored, text = dumps.dump(manifest)
    job = {
        "id": job_id,
        "name": manifest.metadata.name,
        "queue": spec.queue,
        "team": manifest.team,
        "priority": spec.priority,
        "labels": dict(manifest.metadata.labels),
        "manifest": stored,
        "phase": "Pending",
        "reason": reason,
        "waiting": {"": reason} if reason else None,
        "created_at": now,
        "restarts": 0,
        "checkpoint_dir": spec.checkpoint_dir or checkpoint_prefix + job_id,
        "version": 0,
    }
    slices = [
        {
            "job_id": job_id,
            "index": i,
            "phase": "Pending",
            "epoch": 1,
            "gpus": [],
            "attempts": 0,
            "failures": 0,
            "not_before": 0.0,
            "updated_at": now,
        }
        for i in range(spec.slices)
    ]
    event = {
        "at": now,
        "kind": "Submitted",
        "job_id": job_id,
        "message": f"{spec.slices} slice(s) × {spec.gpus_per_slice} GPU(s), queue {spec.queue}",
    }
    return NewJob(job, slices, event, text)


def insert_jobs(s: Session, jobs: list[NewJob]) -> list[int]:
    """Insert new jobs' rows in bulk; their ``seq`` (submission order), in order."""
    if not jobs:
        return []
    # On the tables, not the mapped classes: the ORM's bulk path costs more than the rows.
    jobs_t, slices_t, events_t = JobRow.__table__, SliceRow.__table__, EventRow.__table__  # type: ignore[attr-defined]
    seqs = list(
        s.execute(
            jobs_t.insert().returning(jobs_t.c.seq, sort_by_parameter_order=True),
            [j.job for j in jobs],
        ).scalars()
    )
    s.execute(slices_t.insert(), [sl for j in jobs for sl in j.slices])
    s.execute(events_t.insert(), [j.event for j in jobs])
    return seqs


def view_new(job: NewJob) -> JobPublic:
    """The API's view of a job just inserted by ``insert_jobs``."""
    j = job.job
    m = j["manifest"]
    reason = j["reason"]
    return JobPublic(
        id=j["id"],
        metadata=m["metadata"],
        spec=m["spec"],
        status=JobStatus(
            phase="Pending",
            reason=reason,
            waiting=Waiting(summary=reason, clusters={}) if reason else None,
            slices=pending_views(len(job.slices)),
            restarts=0,
            checkpoint_dir=j["checkpoint_dir"],
            created_at=j["created_at"],
        ),
    )


def pending_views(n: int) -> list[SliceView]:
    """The views of a new job's ``n`` slices (all alike: Pending, epoch 1). Frozen, so
    jobs of up to ``_SHARED_VIEWS`` slices share them rather than build them again."""
    if n > _SHARED_VIEWS:
        return [SliceView(index=i, phase="Pending", epoch=1, attempts=0) for i in range(n)]
    views = _PENDING_VIEWS.get(n)
    if views is None:
        views = _PENDING_VIEWS[n] = [
            SliceView(index=i, phase="Pending", epoch=1, attempts=0) for i in range(n)
        ]
    return views


_SHARED_VIEWS = 64
_PENDING_VIEWS: dict[int, list[SliceView]] = {}


def submit(s: Session, manifest: JobManifest, *, now: float, checkpoint_root: Path) -> JobRow:
    [job_id] = new_ids(s, [manifest.metadata.name])
    job, _ = add_job(s, manifest, job_id=job_id, now=now, checkpoint_root=checkpoint_root)
    s.flush()
    return job


def cancel(s: Session, job_id: str, *, now: float) -> list[AttemptRow]:
    """Cancel a job; returns its open attempts, which the caller orders killed."""
    job = get_row(s, job_id)
    if job.phase in FINAL_JOB_PHASES:
        raise Conflict(f"job {job_id} is already {job.phase}; nothing to cancel")
    job.phase = "Cancelled"
    job.reason = "cancelled by user"
    job.finished_at = now
    job.waiting = None
    job.version += 1
    for sl in slices_of(s, job_id):
        if sl.phase not in ("Succeeded", "Failed"):
            sl.phase = "Cancelled"
            sl.updated_at = now
            s.add(sl)
    s.add(job)
    add_event(s, at=now, kind="Cancelled", job_id=job_id, message="cancelled by user")
    return open_attempts(s, job_id)


def open_attempts(s: Session, job_id: str) -> list[AttemptRow]:
    return list(
        s.exec(
            select(AttemptRow).where(
                AttemptRow.job_id == job_id, col(AttemptRow.ended_at).is_(None)
            )
        )
    )
