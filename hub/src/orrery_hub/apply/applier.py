"""Between the store and the pure scheduler: the snapshot in, the plan back out.

``Applier.gather`` builds the scheduler's input from the in-memory job database
(``apply.gather``: no SQL, run off the store thread); ``commit`` writes a plan back in one
short transaction, checking that nothing changed underneath it (each job's ``version``
and each slice's phase) and dropping what went stale, and returns the assignments to
publish. Wait reasons: the summary is written only when it changes, the per-cluster
detail kept in memory (``apply.waits``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from sqlmodel import Session, col, select

from orrery.ids import JobId
from orrery.wire import Assignment, Kill
from orrery_hub.apply import jobdb
from orrery_hub.apply.commit import commit_job, fail_unplaceable
from orrery_hub.apply.commit import preempt as preempt_victims
from orrery_hub.apply.gather import Gatherer
from orrery_hub.apply.jobdb import JobEntry
from orrery_hub.apply.pending import Pending
from orrery_hub.apply.queued import Gathered
from orrery_hub.apply.waits import WaitBook
from orrery_hub.policy import ClusterFacts, PolicySet
from orrery_hub.policy.facts import Period
from orrery_hub.scheduler import Plan, Policy, SlicePlacement
from orrery_hub.scheduler.history import runtime_history
from orrery_hub.store.models import JobRow

log = logging.getLogger("orrery.hub.applier")

HISTORY_REFRESH_S = 60.0
HISTORY_ROWS = 2000  # newest finished jobs read for learned runtimes


class Applier:
    def __init__(self) -> None:
        self.waits = WaitBook()  # why each job waits: summary stored, detail kept here
        self._gatherer = Gatherer()
        self._history: dict[str, float] = {}
        self._history_at = float("-inf")

    def history(self, s: Session, *, now: float) -> dict[str, float]:
        """Learned runtimes (``scheduler.history``: medians per queue/team and queue) of
        the newest finished jobs, for ``Snapshot.runtime_history``. Read on the store
        thread at most every ``HISTORY_REFRESH_S``: a median over recent runs moves slowly,
        and finished jobs are not in the job database."""
        if now - self._history_at >= HISTORY_REFRESH_S or now < self._history_at:
            rows = s.exec(
                select(JobRow.queue, JobRow.team, JobRow.started_at, JobRow.finished_at)
                .where(JobRow.phase == "Succeeded", col(JobRow.started_at).is_not(None),
                       col(JobRow.finished_at).is_not(None))
                .order_by(col(JobRow.finished_at).desc())
                .limit(HISTORY_ROWS)
            )
            self._history = runtime_history(
                (q, team or "", end - start) for q, team, start, end in rows
                if start is not None and end is not None
            )
            self._history_at = now
        return self._history

    @property
    def avoid(self) -> Mapping[tuple[str, str], frozenset[str]]:
        """Clusters to keep service replicas off (``Gatherer.avoid``)."""
        return self._gatherer.avoid

    @avoid.setter
    def avoid(self, value: Mapping[tuple[str, str], frozenset[str]]) -> None:
        self._gatherer.avoid = value

    @property
    def pending(self) -> Pending:
        """What waits, kept between passes: tell it what changed (``Pending.update``)."""
        return self._gatherer.pending

    def gather(
        self,
        entries: Sequence[JobEntry] | None = None,
        *,
        now: float,
        policies: PolicySet,
        clusters: Sequence[ClusterFacts] = (),
        spend: Mapping[tuple[str, Period], float] | None = None,
        broken: Mapping[str, Exception] | None = None,
        holding: Iterable[JobEntry] = (),
        policy: Policy | None = None,
        history: Mapping[str, float] | None = None,
    ) -> Gathered:
        """See ``Gatherer.gather``."""
        return self._gatherer.gather(
            entries, now=now, policies=policies, clusters=clusters, spend=spend,
            broken=broken, holding=holding, policy=policy, history=history,
        )

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
                self.fail_unplaceable(s, job_id, exc, now=now)
                continue
            if placed:
                self.waits.forget(job_id)
            orders.extend(placed)
        return orders

    def fail_unplaceable(self, s: Session, job_id: str, exc: Exception, *, now: float) -> None:
        """Mark a job whose placement could not be written (or whose manifest no longer
        loads) Failed, with why, so it never fails another pass."""
        self.waits.forget(job_id)
        jobdb.mark(s, job_id)  # a bulk update: the job database reads this job back
        with jobdb.quiet(s):
            fail_unplaceable(s, job_id, exc, now=now)
