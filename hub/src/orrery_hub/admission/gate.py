"""The hub's side of the policy engine: which set is in force, and the store work around
each pure decision (admission with its audit row, reloads, usage, runtime stops).

Called by the runtime (``orrery_hub.runtime``) on the store thread. The decisions themselves are
``orrery_hub.policy`` functions of plain facts; this module only gathers the facts and
records what was decided.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session, col, select

from orrery.errors import Forbidden
from orrery.ids import ClusterName
from orrery.manifest import DEFAULT_MAX_RUNTIME_S, JobManifest
from orrery.wire import NodeReport
from orrery_hub.admission import usage as accounting
from orrery_hub.admission.policyfiles import PolicyHolder, Reload
from orrery_hub.apply.jobdb import JobDb
from orrery_hub.apply.queued import QueuedJob
from orrery_hub.policy import (
    Admission,
    CheckReport,
    ClusterFacts,
    JobFacts,
    PolicySet,
    Usage,
    admit,
    check_report,
    runtime_exceeded,
)
from orrery_hub.policy.facts import Period
from orrery_hub.policy.guardrail import runtime_limit
from orrery_hub.store.models import AuditRow, JobRow

log = logging.getLogger("orrery.hub.policy")

SPEND_TTL_S = 2.0  # budgets are checked against spend at most this stale
SPOT_LABELS = (("capacity", "spot"), ("tier", "spot"))


@dataclass(frozen=True)
class ClusterShape:
    """What the policy engine needs to know of a cluster, copied off the event loop."""

    name: str
    labels: Mapping[str, str]
    nodes: tuple[NodeReport, ...]


def cluster_facts(clusters: Iterable[ClusterShape]) -> tuple[ClusterFacts, ...]:
    out = []
    for c in sorted(clusters, key=lambda c: c.name):
        types = frozenset(n.gpu_type for n in c.nodes if n.gpu_type)
        spot = any(c.labels.get(k) == v for k, v in SPOT_LABELS)
        out.append(ClusterFacts(ClusterName(c.name), dict(c.labels), types, spot))
    return tuple(out)


class PolicyGate:
    def __init__(self, folder: Path | None) -> None:
        self.holder = PolicyHolder(folder)  # a bad set at start: the hub refuses to start
        self._spend: tuple[float, str, dict[tuple[str, Period], float]] | None = None

    @property
    def current(self) -> PolicySet:
        return self.holder.current

    def audit(
        self,
        s: Session,
        *,
        at: float,
        kind: str,
        decision: str,
        detail: str,
        job_id: str | None = None,
        policies: list[str] | None = None,
    ) -> None:
        s.add(
            AuditRow(
                at=at,
                kind=kind,
                job_id=job_id,
                decision=decision,
                detail=detail,
                policies=policies or [],
                digest=self.current.digest,
            )
        )

    # ---- usage --------------------------------------------------------------------------

    def spend(self, s: Session, jobs: JobDb, now: float) -> dict[tuple[str, Period], float]:
        policies = self.current
        if not policies.budgets:
            return {}
        cached = self._spend
        if cached is not None and cached[1] == policies.digest and now - cached[0] < SPEND_TTL_S:
            return cached[2]

        def limit(job_id: str) -> float | None:
            q = _queued(s, jobs, job_id)
            if q is None:
                return None
            lim = runtime_limit(q.facts, policies.matching(q.facts).guardrails)
            return lim.seconds if lim is not None else DEFAULT_MAX_RUNTIME_S

        periods = {b.period for b in policies.budgets}
        out = accounting.spend(s, policies, now=now, periods=periods, runtime_limit=limit)
        self._spend = (now, policies.digest, dict(out))
        return dict(out)

    def usage(self, s: Session, jobs: JobDb, now: float) -> Usage:
        by_team: dict[str, int] = {}
        by_queue: dict[str, int] = {}
        held = jobs.held_by_job()
        for job_id, gpus in held.items():
            q = jobs.job(job_id)
            if q is None:
                continue
            by_team[q.facts.team] = by_team.get(q.facts.team, 0) + gpus
            by_queue[q.queue] = by_queue.get(q.queue, 0) + gpus
        return Usage(gpus_by_team=by_team, gpus_by_queue=by_queue, spend=self.spend(s, jobs, now))

    # ---- decisions ----------------------------------------------------------------------

    def admit(
        self,
        s: Session,
        jobs: JobDb,
        manifest: JobManifest,
        *,
        now: float,
        clusters: tuple[ClusterFacts, ...],
    ) -> Admission:
        """Refuse (Forbidden, naming each policy) or admit; either way, audited."""
        policies = self.current
        facts = JobFacts.from_manifest(manifest)
        a = admit(facts, policies, self.usage(s, jobs, now), now, clusters=clusters or None)
        names = [policy for policy, _ in (*a.denials, *a.holds)]
        if not a.admitted and a.decision == "denied":
            # The refusal is recorded even though the job is not: its own transaction.
            self.audit(
                s, at=now, kind="admit", decision="denied", detail=a.message(), policies=names
            )
            s.commit()
            raise Forbidden(a.message())
        return a

    def check(
        self,
        s: Session,
        jobs: JobDb,
        manifest: JobManifest,
        *,
        now: float,
        clusters: tuple[ClusterFacts, ...],
    ) -> CheckReport:
        facts = JobFacts.from_manifest(manifest)
        return check_report(facts, self.current, self.usage(s, jobs, now), now, clusters)

    def runtime_stops(self, s: Session, jobs: JobDb, now: float) -> list[tuple[str, str]]:
        """Running jobs past the shortest of their own and their guardrails' max runtime."""
        policies = self.current
        out = []
        for job_id, started in s.exec(
            select(JobRow.id, JobRow.started_at).where(
                JobRow.phase == "Running", col(JobRow.started_at).is_not(None)
            )
        ):
            q = _queued(s, jobs, job_id)
            if q is None or started is None:
                continue
            stop = runtime_exceeded(q.facts, policies, started, now)
            if stop is not None:
                out.append((job_id, stop.reason))
        return out

    def reload(self, s: Session, *, now: float) -> Reload:
        r = self.holder.reload()
        if r.error is not None:
            log.error(
                "policy reload refused; the previous set stays in force",
                extra={"error": r.error.message},
            )
            self.audit(s, at=now, kind="reload", decision="refused", detail=r.error.message)
        else:
            log.info("policies reloaded", extra={"changed": r.changed, "digest": r.policies.digest})
            self.audit(
                s,
                at=now,
                kind="reload",
                decision="changed" if r.changed else "unchanged",
                detail=f"{len(r.policies.entries)} policies in force",
            )
        return r


def _queued(s: Session, jobs: JobDb, job_id: str) -> QueuedJob | None:
    """What a job asks for: from the job database, or (a finished job) from its row."""
    q = jobs.job(job_id)
    if q is not None:
        return q
    row = s.exec(select(JobRow).where(JobRow.id == job_id)).first()
    if row is None:
        return None
    try:
        return QueuedJob.of(row)
    except ValueError:
        return None
