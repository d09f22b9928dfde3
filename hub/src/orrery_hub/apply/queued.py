"""What the applier caches and hands the scheduler: a queued job's fixed request, and
what one gather found."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orrery.ids import JobId
from orrery.manifest import JobManifest, RestartPolicy
from orrery_hub.policy import JobFacts, Usage
from orrery_hub.scheduler import (
    JobRequest,
    RunningJob,
)
from orrery_hub.scheduler.waitlist import Ordered
from orrery_hub.store.models import JobRow

ACTIVE_JOB = ("Pending", "Running")


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """What a job asks for: fixed at submission, read once."""

    id: JobId
    name: str
    priority: int
    seq: int
    queue: str
    labels: Mapping[str, str]
    slices: int
    gpus_per_slice: int
    gpu_types: frozenset[str] | None
    gang: bool
    facts: JobFacts  # the same, as the policy engine sees it
    datasets: tuple[str, ...] = ()  # names of the datasets it reads

    @classmethod
    def of(cls, row: JobRow) -> QueuedJob:
        """From a stored row: its manifest validated again."""
        return cls.new(row.id, row.seq or 0, JobManifest.model_validate(row.manifest))

    @classmethod
    def new(
        cls, job_id: str, seq: int, m: JobManifest, facts: JobFacts | None = None
    ) -> QueuedJob:
        """From the manifest a job was just made from (what its row holds); ``facts``:
        the manifest's, as ``JobFacts.from_manifest`` made them before it was stored."""
        spec = m.spec
        if facts is None:
            facts = JobFacts.from_manifest(m)
        jid = JobId(job_id)
        facts = facts.submitted(jid, seq)
        return cls(
            id=jid,
            name=facts.name,
            priority=facts.priority,
            seq=seq,
            queue=facts.queue,
            labels=facts.labels,
            slices=facts.slices,
            gpus_per_slice=facts.gpus_per_slice,
            gpu_types=facts.gpu_types,
            gang=spec.restart_policy == RestartPolicy.GANG,
            facts=facts,
            datasets=tuple(d.name for d in spec.datasets) if spec.datasets else (),
        )


@dataclass(frozen=True)
class Gathered:
    requests: tuple[JobRequest, ...]
    versions: dict[str, int]
    held: dict[tuple[str, str], set[int]]  # GPUs held by open attempts, per (cluster, node)
    blocked: dict[str, str]  # job -> why it is not offered to the scheduler this pass
    summaries: dict[str, str]  # job -> the policy engine's one-line reason, if it has one
    usage: Usage
    running: tuple[RunningJob, ...] = ()  # what holds GPUs: for preemption and backfill
    order: Ordered | None = None  # ``requests`` in offer order, kept between passes
