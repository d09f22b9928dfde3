"""What the API calls (``orrery_hub.api.protocol.HubApi``): submissions, cancellations,
reads of jobs, events and attempts, policies, usage and audit."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import generate_latest
from sqlmodel import Session, col, select

from orrery.errors import Forbidden
from orrery.manifest import JobManifest
from orrery.resources import ClusterPublic, JobPublic
from orrery.wire import (
    Assignment,
    Kill,
)
from orrery_hub import reconcile
from orrery_hub.admission.deliverable import check_deliverable
from orrery_hub.admission.gate import cluster_facts
from orrery_hub.auth import Principal
from orrery_hub.policy import CheckReport
from orrery_hub.runtime.orders import OrderOutbox
from orrery_hub.store import jobs as jobstore
from orrery_hub.store.models import JobRow

log = logging.getLogger("orrery.hub")


class HubService(OrderOutbox):
    async def submit(self, manifest: JobManifest) -> JobPublic:
        check_deliverable(manifest)  # a job that could never be sent is a 422 now
        now = self.clock()
        root = self.settings.checkpoints

        gate, applier = self.gate, self.applier
        facts = cluster_facts(self._shapes())

        def work(s: Session) -> JobPublic:
            verdict = gate.admit(s, applier, manifest, now=now, clusters=facts)  # or Forbidden
            job = jobstore.submit(s, manifest, now=now, checkpoint_root=root)
            names = [policy for policy, _ in (*verdict.denials, *verdict.holds)]
            if verdict.decision == "held":
                job.reason = f"held: {verdict.message()}"
                job.waiting = {"": job.reason}
                s.add(job)
            gate.audit(
                s,
                at=now,
                kind="admit",
                job_id=job.id,
                decision=verdict.decision,
                detail=verdict.message() if names else f"estimated cost {verdict.estimate.text()}",
                policies=names,
            )
            return jobstore.view(job, jobstore.slices_of(s, job.id))

        try:
            out = await self.store.tx(work)
        except Forbidden:
            self.metrics.jobs_denied.inc()
            self.metrics.admissions.labels("denied").inc()
            raise
        self.metrics.jobs_submitted.inc()
        self.metrics.admissions.labels("admitted").inc()
        self.wake()
        return out

    async def get_job(self, job_id: str) -> JobPublic:
        return await self.store.tx(lambda s: jobstore.get(s, job_id))

    async def list_jobs(
        self, phase: str | None, limit: int, *, team: str | None = None
    ) -> list[JobPublic]:
        return await self.store.tx(
            lambda s: jobstore.list_jobs(s, phase=phase, limit=limit, team=team)
        )

    async def cancel(self, job_id: str) -> JobPublic:
        now = self.clock()
        grace = self.settings.timing.kill_grace_s

        def work(s: Session) -> tuple[JobPublic, list[tuple[str, Assignment | Kill]]]:
            open_attempts = jobstore.cancel(s, job_id, now=now)
            kills: list[tuple[str, Assignment | Kill]] = [
                reconcile.kill_order(a.cluster, a.job_id, a.index, a.epoch, "cancelled", grace)
                for a in open_attempts
            ]
            return jobstore.get(s, job_id), kills

        view, kills = await self.store.tx(work)
        await self._publish(kills)
        self.wake()
        return view

    async def events(
        self, job_id: str, *, after: int | None = None, limit: int = jobstore.PAGE
    ) -> Any:
        return await self.store.tx(lambda s: jobstore.events(s, job_id, after=after, limit=limit))

    async def attempts(
        self, job_id: str, *, after: int | None = None, limit: int = jobstore.PAGE
    ) -> Any:
        return await self.store.tx(lambda s: jobstore.attempts(s, job_id, after=after, limit=limit))

    async def clusters(self) -> list[ClusterPublic]:
        return self.inventory.public(await self.store.tx(self.applier.held))

    # ---- policies, usage, audit ------------------------------------------------------

    def policies_info(self) -> dict[str, Any]:
        p = self.gate.current
        return {
            "folder": str(self.settings.policies_dir) if self.settings.policies_dir else None,
            "digest": p.digest,
            "sources": [
                {"path": src.path, "sha256": src.sha256, "policies": list(src.policies)}
                for src in p.sources
            ],
            "entries": [
                {
                    "kind": e.kind,
                    "name": e.name,
                    "file": e.origin.path,
                    "line": e.origin.line,
                    "sha256": e.sha256,
                }
                for e in p.entries
            ],
        }

    async def reload_policies(self) -> dict[str, Any]:
        now = self.clock()
        r = await self.store.tx(lambda s: self.gate.reload(s, now=now))
        if r.error is not None:
            raise r.error
        self.wake()  # the next pass uses the new set; running slices are not touched
        return {"changed": r.changed, **self.policies_info()}

    async def check_policy(self, manifest: JobManifest) -> CheckReport:
        now = self.clock()
        facts = cluster_facts(self._shapes())
        return await self.store.tx(
            lambda s: self.gate.check(s, self.applier, manifest, now=now, clusters=facts)
        )

    async def usage(self, *, team: str | None, since: float | None) -> dict[str, Any]:
        from orrery_hub.admission import usage as accounting

        now = self.clock()
        policies = self.gate.current

        def work(s: Session) -> dict[str, Any]:
            lines = accounting.report(s, policies, now=now, since=since, team=team)
            teams: dict[str, dict[str, float]] = {}
            for ln in lines:
                t = teams.setdefault(ln.team, {"gpuSeconds": 0.0, "cost": 0.0})
                t["gpuSeconds"] += ln.gpu_seconds
                t["cost"] += ln.cost
            current = self.gate.usage(s, self.applier, now)
            return {
                "since": since,
                "now": now,
                "jobs": [
                    {
                        "job": ln.job,
                        "team": ln.team,
                        "queue": ln.queue,
                        "attempts": ln.attempts,
                        "gpuSeconds": round(ln.gpu_seconds, 3),
                        "cost": round(ln.cost, 4),
                    }
                    for ln in lines
                ],
                "teams": {
                    k: {"gpuSeconds": round(v["gpuSeconds"], 3), "cost": round(v["cost"], 4)}
                    for k, v in sorted(teams.items())
                },
                "gpusInUse": {
                    "byTeam": dict(current.gpus_by_team),
                    "byQueue": dict(current.gpus_by_queue),
                },
            }

        return await self.store.tx(work)

    async def audit(
        self, *, job: str | None, limit: int, before: int | None = None
    ) -> list[dict[str, Any]]:

        from orrery_hub.store.models import AuditRow

        def work(s: Session) -> list[dict[str, Any]]:
            q = select(AuditRow).order_by(col(AuditRow.id).desc()).limit(limit)
            if job:
                q = q.where(AuditRow.job_id == job)
            if before is not None:  # the next page, newest first: rows older than that id
                q = q.where(col(AuditRow.id) < before)
            return [
                {
                    "id": a.id,
                    "at": a.at,
                    "kind": a.kind,
                    "job": a.job_id,
                    "decision": a.decision,
                    "detail": a.detail,
                    "policies": a.policies,
                    "digest": a.digest,
                }
                for a in s.exec(q)
            ]

        return await self.store.tx(work)

    async def record_denial(
        self, status: int, who: Principal | None, what: str, reason: str, source: str
    ) -> None:
        """A refused API call, in the audit log: who, what, why — never the token. Each is
        counted; the rows are rate-limited per client address, so a flood of bad calls
        cannot grow the audit table without bound."""
        now = self.clock()
        self.metrics.api_denied.labels(str(status)).inc()
        if self._denial_audit.take(source, now) > 0:
            self.metrics.api_denied_unaudited.inc()
            return
        caller = "anonymous" if who is None else f"{who.subject} ({who.role.value})"
        decision = "unauthenticated" if status == 401 else "forbidden"
        detail = f"{what} by {caller}: {reason}"
        await self.store.tx(
            lambda s: self.gate.audit(s, at=now, kind="auth", decision=decision, detail=detail)
        )

    async def metrics_text(self) -> bytes:
        """The Prometheus exposition: counters as they stand, gauges read now."""
        from orrery_hub.runtime.scrape import refresh

        await refresh(self)
        return generate_latest(self.metrics.registry)

    async def job_counts(self) -> dict[str, int]:
        def work(s: Session) -> dict[str, int]:
            counts: dict[str, int] = {}
            for phase in s.exec(select(JobRow.phase)).all():
                counts[phase] = counts.get(phase, 0) + 1
            return counts

        return await self.store.tx(work)
