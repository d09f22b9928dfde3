"""Decide and store a batch of submissions in one transaction (the store-thread half of
group commit, ``admission.groupcommit``).

Each manifest is decided on its own: refused by a policy (its audit row is written, the
job is not), held by a budget (stored, waiting with that reason), or admitted. What the
policies look at — GPUs held by running attempts and the spend so far — does not change
as jobs are admitted, so it is read once per batch, not once per job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlmodel import Session

from orrery.errors import Forbidden, OrreryError
from orrery.manifest import JobManifest
from orrery.resources import JobPublic
from orrery_hub.admission.gate import PolicyGate
from orrery_hub.admission.groupcommit import Submission
from orrery_hub.apply.jobdb import JobDb
from orrery_hub.policy import ClusterFacts, JobFacts, Usage, admit
from orrery_hub.store import jobs as jobstore

Outcome = JobPublic | OrreryError


class Admitter:
    def __init__(self, gate: PolicyGate, jobs: JobDb, checkpoints: Path) -> None:
        self.gate = gate
        self.jobs = jobs
        self.checkpoints = checkpoints

    def admit(
        self,
        s: Session,
        batch: Sequence[Submission[JobManifest, Outcome]],
        clusters: tuple[ClusterFacts, ...],
    ) -> list[list[Outcome]]:
        now = batch[0].now
        usage = self.gate.usage(s, self.jobs, now)
        names = [m.metadata.name for sub in batch for m in sub.items]
        ids = iter(jobstore.new_ids(s, names))
        out: list[list[Outcome]] = []
        for sub in batch:
            results: list[Outcome] = []
            for manifest in sub.items:
                results.append(self._one(s, manifest, next(ids), sub.now, usage, clusters))
            out.append(results)
        return out

    def _one(
        self,
        s: Session,
        manifest: JobManifest,
        job_id: str,
        now: float,
        usage: Usage,
        clusters: tuple[ClusterFacts, ...],
    ) -> Outcome:
        gate = self.gate
        verdict = admit(
            JobFacts.from_manifest(manifest), gate.current, usage, now, clusters=clusters or None
        )
        names = [policy for policy, _ in (*verdict.denials, *verdict.holds)]
        if not verdict.admitted and verdict.decision == "denied":
            # The refusal is recorded even though the job is not.
            gate.audit(
                s, at=now, kind="admit", decision="denied", detail=verdict.message(), policies=names
            )
            return Forbidden(verdict.message())
        job, slices = jobstore.add_job(
            s, manifest, job_id=job_id, now=now, checkpoint_root=self.checkpoints
        )
        if verdict.decision == "held":
            job.reason = f"held: {verdict.message()}"
            job.waiting = {"": job.reason}
        gate.audit(
            s,
            at=now,
            kind="admit",
            job_id=job.id,
            decision=verdict.decision,
            detail=verdict.message() if names else f"estimated cost {verdict.estimate.text()}",
            policies=names,
        )
        return jobstore.view(job, slices)
