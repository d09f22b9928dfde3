"""What the API calls (``orrery_hub.api.protocol.HubApi``): submissions, cancellations,
reads of jobs, events and attempts, policies, usage and audit."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from prometheus_client import generate_latest
from sqlmodel import Session

from orrery.errors import Forbidden, OrreryError
from orrery.manifest import JobManifest
from orrery.resources import AttemptView, ClusterPublic, EventView, JobPublic
from orrery.wire import (
    Assignment,
    Kill,
)
from orrery_hub import reconcile
from orrery_hub.admission.answer import Admitted
from orrery_hub.admission.deliverable import check_deliverable
from orrery_hub.admission.groupcommit import Submission
from orrery_hub.api.models import (
    AuditEntry,
    GpusInUse,
    JobUsage,
    PolicyEntryInfo,
    PolicyInfo,
    PolicyReload,
    PolicySource,
    TeamUsage,
    UsageReport,
)
from orrery_hub.auth import Principal
from orrery_hub.datasets.status import enrich as data_status
from orrery_hub.policy import CheckReport
from orrery_hub.runtime import collector, joblogs
from orrery_hub.runtime.orders import OrderOutbox
from orrery_hub.store import jobs as jobstore
from orrery_hub.store import queries
from orrery_hub.store.models import AttemptRow

log = logging.getLogger("orrery.hub")


class HubService(OrderOutbox):
    async def submit(self, manifest: JobManifest) -> JobPublic:
        [out] = await self.submit_many([manifest])
        if isinstance(out, OrreryError):
            raise out
        return out.public()

    async def submit_many(
        self, manifests: Sequence[JobManifest | OrreryError]
    ) -> list[Admitted | OrreryError]:
        """Admit each manifest on its own (an error in place of one stays its outcome):
        all of them in one transaction, shared with whatever else arrives meanwhile
        (``admission.groupcommit``). Each outcome is known only once that has committed."""
        checked: list[JobManifest | OrreryError] = []
        for m in manifests:
            if isinstance(m, JobManifest):
                try:
                    check_deliverable(m)  # a job that could never be sent is a 422 now
                except OrreryError as exc:
                    m = exc
            checked.append(m)
        todo = [m for m in checked if isinstance(m, JobManifest)]
        done = iter(await self.admission.submit(todo, self.clock()) if todo else [])
        out = [next(done) if isinstance(m, JobManifest) else m for m in checked]
        admitted = sum(1 for o in out if isinstance(o, Admitted))
        denied = sum(1 for o in out if isinstance(o, Forbidden))
        if denied:
            self.metrics.jobs_denied.inc(denied)
            self.metrics.admissions.labels("denied").inc(denied)
        if admitted:
            self.metrics.jobs_submitted.inc(admitted)
            self.metrics.admissions.labels("admitted").inc(admitted)
            self.wake()
        return out

    async def _admit_batch(
        self, batch: list[Submission[JobManifest, Admitted | OrreryError]]
    ) -> list[list[Admitted | OrreryError]]:
        facts = self._facts()
        try:
            return await self.store.tx(lambda s: self.admitter.admit(s, batch, facts))
        finally:
            collector.settle()  # what admission left alive is walked by no collection

    async def get_job(self, job_id: str) -> JobPublic:
        job = await self.store.tx(lambda s: queries.get(s, job_id))
        # Per-cluster wait reasons live in the planning hub's memory, not the store.
        job = self.applier.waits.describe(job)
        return data_status(job, self.dataset_caches(), self.data_notes)

    async def list_jobs(
        self,
        phase: str | None,
        limit: int,
        *,
        team: str | None = None,
        queue: str | None = None,
        name: str | None = None,
    ) -> list[JobPublic]:
        return await self.store.tx(
            lambda s: queries.list_jobs(
                s, phase=phase, limit=limit, team=team, queue=queue, name=name
            )
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
            return queries.get(s, job_id), kills

        view, kills = await self.store.tx(work)
        await self._publish(kills)
        self.wake()
        return view

    async def events(
        self, job_id: str, *, after: int | None = None, limit: int = queries.PAGE
    ) -> list[EventView]:
        return await self.store.tx(lambda s: queries.events(s, job_id, after=after, limit=limit))

    async def attempts(
        self, job_id: str, *, after: int | None = None, limit: int = queries.PAGE
    ) -> list[AttemptView]:
        return await self.store.tx(lambda s: queries.attempts(s, job_id, after=after, limit=limit))

    async def logs(
        self,
        job_id: str,
        *,
        slice: int | None = None,
        epoch: int | None = None,
        follow: bool = False,
        tail: int | None = None,
    ) -> AsyncIterator[bytes]:
        """A job's output, fetched from the clusters that hold it (see ``joblogs``)."""
        job = await self.get_job(job_id)
        attempts = await self.attempts(job_id, limit=queries.MAX_PAGE)

        def lost(cluster: str) -> bool:
            v = self.inventory.clusters.get(cluster)
            return v is None or v.state == "Lost"

        async def still_open(a: AttemptView) -> bool:
            def read(s: Session) -> bool:
                row = s.get(AttemptRow, a.id)
                return row is not None and row.ended_at is None

            return await self.store.tx(read)

        q = joblogs.LogQuery(slice=slice, epoch=epoch, follow=follow, tail=tail)
        return await joblogs.open_logs(
            job, attempts, q, nc=self.nc, lost=lost, still_open=still_open
        )

    async def clusters(self) -> list[ClusterPublic]:
        if not self.leading:
            await self._restore(as_stored=True)  # a standby hears no heartbeats
        return self.inventory.public(self.jobdb.held())

    # ---- policies, usage, audit ------------------------------------------------------

    def policies_info(self) -> PolicyInfo:
        p = self.gate.current
        return PolicyInfo(
            folder=str(self.settings.policies_dir) if self.settings.policies_dir else None,
            digest=p.digest,
            sources=[
                PolicySource(path=src.path, sha256=src.sha256, policies=list(src.policies))
                for src in p.sources
            ],
            entries=[
                PolicyEntryInfo(
                    kind=e.kind,
                    name=e.name,
                    file=e.origin.path,
                    line=e.origin.line,
                    sha256=e.sha256,
                )
                for e in p.entries
            ],
        )

    async def reload_policies(self) -> PolicyReload:
        now = self.clock()
        r = await self.store.tx(lambda s: self.gate.reload(s, now=now))
        if r.error is not None:
            raise r.error
        self.wake()  # the next pass uses the new set; running slices are not touched
        return PolicyReload(changed=r.changed, **dict(self.policies_info()))

    async def check_policy(self, manifest: JobManifest) -> CheckReport:
        now = self.clock()
        facts = self._facts()
        return await self.store.tx(
            lambda s: self.gate.check(s, self.jobdb, manifest, now=now, clusters=facts)
        )

    async def usage(self, *, team: str | None, since: float | None) -> UsageReport:
        from orrery_hub.admission import usage as accounting

        now = self.clock()
        policies = self.gate.current

        def work(s: Session) -> UsageReport:
            lines = accounting.report(s, policies, now=now, since=since, team=team)
            teams: dict[str, list[float]] = {}
            for ln in lines:
                t = teams.setdefault(ln.team, [0.0, 0.0, 0.0])
                t[0] += ln.gpu_seconds
                t[1] += ln.cost
                t[2] += ln.unpriced_gpu_seconds
            current = self.gate.usage(s, self.jobdb, now)
            return UsageReport(
                since=since,
                now=now,
                jobs=[
                    JobUsage(
                        job=ln.job,
                        team=ln.team,
                        queue=ln.queue,
                        attempts=ln.attempts,
                        gpu_seconds=round(ln.gpu_seconds, 3),
                        cost=round(ln.cost, 4),
                        unpriced_gpu_seconds=round(ln.unpriced_gpu_seconds, 3),
                    )
                    for ln in lines
                ],
                teams={
                    k: TeamUsage(
                        gpu_seconds=round(v[0], 3),
                        cost=round(v[1], 4),
                        unpriced_gpu_seconds=round(v[2], 3),
                    )
                    for k, v in sorted(teams.items())
                },
                gpus_in_use=GpusInUse(
                    by_team=dict(current.gpus_by_team), by_queue=dict(current.gpus_by_queue)
                ),
            )

        return await self.store.tx(work)

    async def audit(
        self, *, job: str | None, limit: int, before: int | None = None
    ) -> list[AuditEntry]:
        """Audit entries, newest first (``before``: the next page, rows older than that id)."""

        def work(s: Session) -> list[AuditEntry]:
            return [
                AuditEntry(
                    id=a.id,
                    at=a.at,
                    kind=a.kind,
                    job=a.job_id,
                    decision=a.decision,
                    detail=a.detail,
                    policies=list(a.policies),
                    digest=a.digest,
                )
                for a in queries.audit(s, job=job, limit=limit, before=before)
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
        if not self.leading:
            return  # counted; the audit log is the leader's to write
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
        return await self.store.tx(queries.job_counts)
