"""Decide and store a batch of submissions in one transaction (the store-thread half of
group commit, ``admission.groupcommit``).

Each manifest is decided on its own: refused by a policy (its audit row is written, the
job is not), held by a budget (stored, waiting with that reason), or admitted. What the
policies look at — GPUs held by running attempts and the spend so far — does not change
as jobs are admitted, so it is read once per batch, not once per job; and jobs alike in
all the policies read of them (``policy.admit_key``) share one decision. Rows are written
with one bulk insert per table through the driver itself (on PostgreSQL all of them in
one round trip, ``store.pipelined``; on SQLite ``store.sqlitebulk``), and the job
database learns each new job from the values written, not by reading them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlmodel import Session

from orrery.errors import Forbidden, ManifestError, OrreryError
from orrery.manifest import JobManifest
from orrery_hub.admission.answer import Admitted
from orrery_hub.admission.gate import PolicyGate
from orrery_hub.admission.groupcommit import Submission
from orrery_hub.apply import jobdb
from orrery_hub.apply.jobdb import JobDb, JobEntry, SliceEntry
from orrery_hub.apply.queued import QueuedJob
from orrery_hub.datasets.orders import check_datasets
from orrery_hub.policy import (
    Admission,
    ClusterFacts,
    Evaluator,
    JobFacts,
    Usage,
    admit,
    admit_key,
)
from orrery_hub.store import jobs as jobstore
from orrery_hub.store import pipelined, sqlitebulk
from orrery_hub.store.manifests import ManifestDumps
from orrery_hub.store.models import AuditRow

Outcome = Admitted | OrreryError


class Admitter:
    def __init__(self, gate: PolicyGate, jobs: JobDb, checkpoints: Path) -> None:
        self.gate = gate
        self.jobs = jobs
        self.checkpoints = checkpoints
        # Kept from batch to batch while the policies and the clusters stay the same: made
        # afresh, one placement policy over 1,000 clusters cost ~2 ms a batch (~0.05 ms
        # reused). Used on the store thread only; the pass has its own.
        self._evaluator: Evaluator | None = None

    def admit(
        self,
        s: Session,
        batch: Sequence[Submission[JobManifest, Outcome]],
        clusters: tuple[ClusterFacts, ...],
    ) -> list[list[Outcome]]:
        if pipelined.available(s):
            try:
                return self._admit(s, batch, clusters, pipeline=True)
            except pipelined.IdTaken:
                pass  # nothing of it was stored: again, with ids checked first
        return self._admit(s, batch, clusters, pipeline=False)

    def _evaluator_for(self, clusters: tuple[ClusterFacts, ...]) -> Evaluator | None:
        if not clusters:
            return None
        ev = self._evaluator
        if ev is None or not ev.serves(self.gate.current, clusters):
            ev = self._evaluator = Evaluator(self.gate.current, clusters)
        return ev

    def _admit(
        self,
        s: Session,
        batch: Sequence[Submission[JobManifest, Outcome]],
        clusters: tuple[ClusterFacts, ...],
        *,
        pipeline: bool,
        driver: bool = True,
    ) -> list[list[Outcome]]:
        """``pipeline``: ids unchecked, written by ``store.pipelined``. ``driver=False``:
        written through SQLAlchemy even where the driver could (what the others match)."""
        now = batch[0].now
        usage = self.gate.usage(s, self.jobs, now)
        evaluator = self._evaluator_for(clusters)
        names = [m.metadata.name for sub in batch for m in sub.items]
        ids = iter(jobstore.new_ids(s, names, check=not pipeline))
        digest = self.gate.current.digest
        audits: list[dict[str, Any]] = []
        stored: list[tuple[jobstore.NewJob, JobManifest, JobFacts]] = []
        prefix = jobstore.checkpoint_prefix(self.checkpoints)
        dumps = ManifestDumps()
        out: list[list[Outcome | int]] = []
        decided: dict[tuple[object, ...], _Verdict] = {}
        for sub in batch:
            results: list[Outcome | int] = []
            for manifest in sub.items:
                job_id = next(ids)
                try:
                    check_datasets(s, manifest)  # a job naming an unknown dataset is a 422
                except ManifestError as exc:
                    results.append(exc)
                    continue
                facts = JobFacts.from_manifest(manifest)
                key = (admit_key(facts, self.gate.current), sub.now)
                v = decided.get(key)
                if v is None:
                    v = _Verdict(self._decide(facts, sub.now, usage, clusters, evaluator))
                    decided[key] = v
                if v.denied:
                    # The refusal is recorded even though the job is not.
                    audits.append(v.audit(sub.now, None, digest))
                    results.append(Forbidden(v.message))
                    continue
                new = jobstore.new_job(
                    manifest,
                    job_id=job_id,
                    now=sub.now,
                    checkpoint_prefix=prefix,
                    dumps=dumps,
                    reason=v.held,
                )
                audits.append(v.audit(sub.now, job_id, digest))
                results.append(len(stored))
                stored.append((new, manifest, facts))
            out.append(results)
        if pipeline:
            seqs = pipelined.insert_admitted(s, [new for new, _, _ in stored], audits)
        elif driver and sqlitebulk.available(s):
            seqs = sqlitebulk.insert_admitted(s, [new for new, _, _ in stored], audits)
        else:
            with jobdb.quiet(s):  # bulk writes: the job database is told below
                seqs = jobstore.insert_jobs(s, [new for new, _, _ in stored])
                if audits:
                    s.execute(AuditRow.__table__.insert(), audits)  # type: ignore[attr-defined]
        for (new, manifest, facts), seq in zip(stored, seqs, strict=True):
            jobdb.created(s, _entry(new, manifest, facts, seq))
        answers = [Admitted(new) for new, _, _ in stored]
        return [[answers[r] if isinstance(r, int) else r for r in results] for results in out]

    def _decide(
        self,
        facts: JobFacts,
        now: float,
        usage: Usage,
        clusters: tuple[ClusterFacts, ...],
        evaluator: Evaluator | None,
    ) -> Admission:
        return admit(
            facts,
            self.gate.current,
            usage,
            now,
            clusters=clusters or None,
            evaluator=evaluator,
        )


class _Verdict:
    """One decision and what each job it decides is told and audited with: made once for
    all the jobs of a batch alike (``policy.admit_key``)."""

    __slots__ = ("_detail", "_policies", "admission", "denied", "held", "message")

    def __init__(self, a: Admission) -> None:
        self.admission = a
        self.message = a.message()
        self.denied = not a.admitted and a.decision == "denied"
        self.held = f"held: {self.message}" if a.decision == "held" else None
        self._policies = [policy for policy, _ in (*a.denials, *a.holds)]
        # An admitted job that no policy named is audited with its estimated cost.
        self._detail = (
            self.message
            if self.denied or self._policies
            else f"estimated cost {a.estimate.text()}"
        )

    def audit(self, at: float, job_id: str | None, digest: str) -> dict[str, Any]:
        return {
            "at": at, "kind": "admit", "job_id": job_id, "decision": self.admission.decision,
            "detail": self._detail, "policies": list(self._policies), "digest": digest,
        }  # fmt: skip


def _entry(new: jobstore.NewJob, manifest: JobManifest, facts: JobFacts, seq: int) -> JobEntry:
    j = new.job
    return JobEntry(
        j["id"],
        "Pending",
        0,
        None,
        None,
        _pending_slices(len(new.slices)),
        (),
        QueuedJob.new(j["id"], seq, manifest, facts),
    )


def _pending_slices(n: int) -> tuple[SliceEntry, ...]:
    """A new job's ``n`` slices as the job database holds them (``jobstore.new_job``'s
    rows: index i, Pending, epoch 1). Frozen and alike for every job of as many slices:
    shared, up to 64 slices."""
    hit = _PENDING.get(n)
    if hit is None:
        hit = tuple(SliceEntry(i, "Pending", 1, 0.0) for i in range(n))
        if n <= 64:
            _PENDING[n] = hit
    return hit


_PENDING: dict[int, tuple[SliceEntry, ...]] = {}
