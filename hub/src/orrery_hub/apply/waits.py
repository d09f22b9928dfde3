"""Why each waiting job waits: the one-line summary in the store, the per-cluster detail in
the planning hub's memory (as Armada's leader keeps its scheduling reports).

A pass says, for every job it leaves waiting, a summary and a reason per known cluster.
With a thousand clusters that detail is a thousand strings per job; rebuilding, comparing,
serialising and storing it per job per pass made the wait reasons cost more than the
pass itself, inside the store transaction that heartbeats and submissions wait behind.
So:

- the summary goes to the store (``JobRow.reason``, and ``JobRow.waiting`` as
  ``{"": summary}``, what older readers and a standby show), written only for the jobs
  whose summary changed, one UPDATE per distinct summary;
- the detail stays here: the last pass's own reasons, one object per reason the pass made
  (``cycle.plan`` makes one per job shape, so a long queue of one shape shares it), kept
  by reference and never copied, compared or serialised;
- the job view (``Applier.describe`` via ``runtime.service.get_job``) fills
  ``Waiting.clusters`` from here when the summary it read from the store is the one this
  hub recorded; after a restart, until the next pass, it shows the summary alone.

Called by the applier on the store thread, inside the pass's commit; read by the API on
the event loop (a dict lookup of immutable values: safe under the GIL).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from sqlalchemy import func
from sqlmodel import Session

from orrery.ids import ClusterName, JobId
from orrery.resources import JobPublic, Waiting
from orrery_hub.apply import jobdb
from orrery_hub.apply.queued import ACTIVE_JOB, Gathered
from orrery_hub.scheduler import Plan, WaitReason
from orrery_hub.scheduler.plan import WaitReasons
from orrery_hub.store.models import JobRow

CHUNK = 500  # ids per UPDATE ... WHERE id IN (...)
Changed = dict[str, list[str]]  # summary -> the jobs whose stored summary it becomes
_NONE: frozenset[str] = frozenset()


class WaitBook:
    def __init__(self) -> None:
        self._stored: dict[str, str] = {}  # job -> the summary the store holds for it
        # The last pass's reasons (its own mapping, never changed after the pass): each
        # waiting job's detail is read from it when asked, not copied per waiting job
        # each pass.
        self._last: Mapping[JobId, WaitReason] = {}
        # ``_stored`` the other way round: summary -> the jobs the store holds it for. A
        # reason the pass told a whole kind of job (``WaitReasons.groups``) is compared
        # with one set difference, not a lookup per job (~10 ms a pass at 100,000).
        self._holding: dict[str, set[str]] = {}

    def _set(self, job_id: str, summary: str) -> None:
        self._unhold(job_id, self._stored.get(job_id))
        self._stored[job_id] = summary
        self._holding.setdefault(summary, set()).add(job_id)

    def forget(self, job_id: str) -> None:
        """The job was placed or failed: it waits for nothing (its row says so)."""
        self._unhold(job_id, self._stored.pop(job_id, None))

    def _unhold(self, job_id: str, summary: str | None) -> None:
        held = self._holding.get(summary) if summary is not None else None
        if held is not None:
            held.discard(job_id)

    def record(self, s: Session, plan: Plan, g: Gathered) -> int:
        """``note`` and ``write`` at once. Returns how many rows it asked to change."""
        return self.write(s, self.note(plan, g))

    def note(self, plan: Plan, g: Gathered) -> Changed:
        """Note why each unplaced job waits; return the summaries the store lacks, by
        summary: one dict lookup a job given its reason alone, one set difference a group
        told one at once. The pass's worker thread runs it, so the store thread only
        writes what changed."""
        stored = self._stored
        was = stored.get
        changed: Changed = defaultdict(list)
        summaries = g.summaries
        waiting = plan.waiting
        if summaries:  # a policy's own summaries: looked up job by job
            for job_id, w in waiting.items():
                summary = summaries.get(job_id, w.summary)
                if was(job_id) != summary:
                    self._set(job_id, summary)
                    changed[summary].append(job_id)
        else:
            each, groups = (
                (waiting.each, waiting.groups)
                if isinstance(waiting, WaitReasons)
                else (waiting, ())
            )
            for job_id, w in each.items():
                if was(job_id) != w.summary:
                    self._set(job_id, w.summary)
                    changed[w.summary].append(job_id)
            for ids, w in groups:
                summary = w.summary
                for job_id in ids - self._holding.get(summary, _NONE):
                    self._set(job_id, summary)
                    changed[summary].append(job_id)
        for blocked_id, why in g.blocked.items():
            if blocked_id in waiting:
                continue
            if was(blocked_id) != why:
                self._set(blocked_id, why)
                changed[why].append(blocked_id)
        self._last = waiting
        if len(stored) > len(g.versions) + 1000:  # finished jobs wait for nothing
            # Copied first (one C call): the store thread may ``forget`` a job meanwhile,
            # and a dict that changes size under a comprehension raises.
            kept = {j: r for j, r in list(stored.items()) if j in g.versions}
            holding: dict[str, set[str]] = {}
            for j, r in kept.items():
                holding.setdefault(r, set()).add(j)
            self._stored, self._holding = kept, holding
        return changed

    def write(self, s: Session, changed: Changed) -> int:
        """Store the summaries ``note`` found changed: one UPDATE per distinct summary and
        ``CHUNK`` jobs. On the table, not the mapped class: the ORM's bulk UPDATE would
        read every id back (RETURNING) to keep a session in step that holds none of them."""
        jobs = JobRow.__table__  # type: ignore[attr-defined]
        rows = 0
        for summary, ids in changed.items():
            for i in range(0, len(ids), CHUNK):
                with jobdb.quiet(s):  # wait reasons: nothing a snapshot shows
                    s.execute(
                        jobs.update()
                        .where(
                            jobs.c.id.in_(ids[i : i + CHUNK]),
                            # phase through a function, so no planner can take it for an
                            # index: SQLite did, given a long id list, and scanned every
                            # waiting job per statement (O(queue): 150 µs a row at 100,000
                            # queued, 12 µs on the id index).
                            func.coalesce(jobs.c.phase, "").in_(ACTIVE_JOB),
                        )
                        .values(waiting={"": summary}, reason=summary)
                    )
                rows += len(ids[i : i + CHUNK])
        return rows

    def unwritten(self, changed: Changed) -> None:
        """The transaction that was to ``write`` these failed: the store lacks them."""
        for ids in changed.values():
            for job_id in ids:
                self.forget(job_id)

    def clusters(self, job_id: str, summary: str) -> Mapping[ClusterName, str] | None:
        """The per-cluster reasons behind ``summary``, if this hub's last pass gave them
        (a job the pass was not offered, blocked or in its retry backoff, has none)."""
        if self._stored.get(job_id) != summary:
            return None
        w = self._last.get(JobId(job_id))
        return w.clusters if w is not None else None

    def describe(self, job: JobPublic) -> JobPublic:
        """``job`` with its wait reasons per cluster, where this hub knows them."""
        w = job.status.waiting
        if w is None or w.clusters:
            return job
        per = self.clusters(job.id, w.summary)
        if not per:
            return job
        clusters = {str(c): r for c, r in per.items()}
        status = job.status.model_copy(
            update={"waiting": Waiting(summary=w.summary, clusters=clusters)}
        )
        return job.model_copy(update={"status": status})
