"""The in-memory job database the scheduler plans from (as Armada's ``jobdb``): every job
that waits for placement or holds GPUs, with its version, its slices' phases, epochs and
backoffs, and its open attempts.

Rebuilt from the store at start (``load``) and kept up to date by every commit: the store
runner (``store.runner``) notes which jobs a transaction touched (``touched``, from the
ORM's flushes, plus ``mark`` for bulk statements), reads exactly those jobs back inside
the same transaction (``read``), and applies what it read here once that transaction has
committed (``apply``, on the event loop). So a snapshot costs no SQL, and what it shows
is at most one commit behind the store; the applier's version check at commit catches
the rest.

Entries are frozen and replaced whole; readers on other threads take ``entries()`` (one
list, built atomically under the GIL) and never see a half-applied change.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, col, select

from orrery_hub.apply.queued import ACTIVE_JOB, QueuedJob
from orrery_hub.store.models import AttemptRow, JobRow, SliceRow

log = logging.getLogger("orrery.hub.jobdb")

CHUNK = 500  # ids per IN (...) query
INFO_KEY = "orrery.jobdb.touched"
RELOAD_KEY = "orrery.jobdb.reload"  # a bulk statement changed rows the ORM did not see
QUIET_KEY = "orrery.jobdb.quiet"  # ... or one known to change nothing a snapshot shows
NEW_KEY = "orrery.jobdb.new"  # jobs created in bulk by this transaction
_TABLES = {"jobs", "slices", "attempts"}
# Only these columns change what a snapshot shows; a heartbeat's confirmation stamp or a
# progress report does not send the job back to be read.
_JOB_FIELDS = ("phase", "version", "started_at", "checkpoint_at")
_SLICE_FIELDS = ("phase", "epoch", "not_before")
_ATTEMPT_FIELDS = ("ended_at", "preempted_for", "started_at", "gpus", "node", "cluster")


@dataclass(frozen=True, slots=True)
class SliceEntry:
    index: int
    phase: str
    epoch: int
    not_before: float


@dataclass(frozen=True, slots=True)
class OpenAttempt:
    index: int
    epoch: int
    cluster: str
    node: str
    gpus: tuple[int, ...]
    assigned_at: float
    started_at: float | None
    preempted_for: str | None


@dataclass(frozen=True, slots=True)
class JobEntry:
    id: str
    phase: str
    version: int
    started_at: float | None
    checkpoint_at: float | None
    slices: tuple[SliceEntry, ...]
    attempts: tuple[OpenAttempt, ...]
    queued: QueuedJob | None  # None: the stored manifest no longer loads (see ``broken``)

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_JOB


Delta = dict[str, JobEntry | None]  # None: no longer waiting nor holding anything


def touched(s: OrmSession) -> set[str] | None:
    t: set[str] | None = s.info.get(INFO_KEY)
    return t


def track(s: Session) -> None:
    """Start noting the jobs ``s`` changes (the store runner calls it per transaction)."""
    s.info[INFO_KEY] = set()


def mark(s: Session, job_id: str) -> None:
    """A job changed by a bulk statement (which the ORM does not see)."""
    t = touched(s)
    if t is not None:
        t.add(job_id)


@contextmanager
def quiet(s: Session) -> Iterator[None]:
    """Bulk statements in this block change nothing the job database holds (wait reasons)."""
    s.info[QUIET_KEY] = True
    try:
        yield
    finally:
        s.info.pop(QUIET_KEY, None)


def created(s: Session, entry: JobEntry) -> None:
    """A job this transaction creates, as the job database will hold it: written in bulk
    (admission writes thousands a second), so nothing is read back."""
    if touched(s) is not None:
        s.info.setdefault(NEW_KEY, []).append(entry)


def _changed(obj: Any, fields: Iterable[str]) -> bool:
    state = inspect(obj)
    return any(state.attrs[f].history.has_changes() for f in fields)


@event.listens_for(Session, "after_flush")
def _note(s: Session, _ctx: Any) -> None:
    t = touched(s)
    if t is None:
        return
    for obj in chain(s.new, s.dirty, s.deleted):
        if isinstance(obj, JobRow):
            if obj in s.new or obj in s.deleted or _changed(obj, _JOB_FIELDS):
                t.add(obj.id)
        elif isinstance(obj, SliceRow):
            if obj in s.new or obj in s.deleted or _changed(obj, _SLICE_FIELDS):
                t.add(obj.job_id)
        elif isinstance(obj, AttemptRow) and (
            obj in s.new or obj in s.deleted or _changed(obj, _ATTEMPT_FIELDS)
        ):
            t.add(obj.job_id)


@event.listens_for(Session, "do_orm_execute")
def _note_bulk(state: ORMExecuteState) -> None:
    s = state.session
    if touched(s) is None or s.info.get(QUIET_KEY):
        return
    if state.is_insert or state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        if getattr(table, "name", None) in _TABLES:
            s.info[RELOAD_KEY] = True  # whatever it changed: read everything back


class JobDb:
    def __init__(self) -> None:
        self.jobs: dict[str, JobEntry] = {}
        self.holding: dict[str, JobEntry] = {}  # the jobs with open attempts: few
        self._attempts_on: Counter[str] = Counter()  # open attempts per cluster
        self.loaded = False
        # Stored jobs whose manifest no longer loads: failed by the next commit.
        self.broken: dict[str, Exception] = {}
        # Jobs changed since the reconcile loop last asked (``drain``): what a pass looks
        # at. Past a bound (a standby that never plans) it says "everything" instead.
        self._changed: set[str] = set()
        self._overflow = False

    # ---- reads (any thread) -------------------------------------------------------------

    def entries(self) -> list[JobEntry]:
        return list(self.jobs.values())

    def job(self, job_id: str) -> QueuedJob | None:
        e = self.jobs.get(job_id)
        return e.queued if e is not None else None

    def held(self) -> dict[tuple[str, str], set[int]]:
        """GPUs held by open attempts, per (cluster, node)."""
        out: dict[tuple[str, str], set[int]] = defaultdict(set)
        for e in list(self.holding.values()):
            for a in e.attempts:
                out[(a.cluster, a.node)].update(a.gpus)
        return dict(out)

    def drain(self) -> Delta | None:
        """The jobs changed since the last call, as they stand now (None: gone); None:
        too many to list, take ``entries()``. The event loop's: the thread ``apply`` runs
        on, so nothing is lost between the two."""
        ids, self._changed = self._changed, set()
        if self._overflow:
            self._overflow = False
            return None
        return {j: self.jobs.get(j) for j in ids}

    def attempts_on(self, cluster: str) -> int:
        """Open attempts on ``cluster``: none means its heartbeat has nothing to settle."""
        return self._attempts_on[cluster]

    def held_by_job(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in list(self.holding.values()):
            n = sum(len(a.gpus) for a in e.attempts)
            if n:
                out[e.id] = n
        return out

    # ---- the store thread: read inside a transaction ------------------------------------

    def begin(self, s: Session) -> None:
        track(s)

    def collect(self, s: Session) -> Delta:
        """The jobs this transaction changed, as it leaves them (read before it commits)."""
        s.flush()
        new = s.info.pop(NEW_KEY, [])
        if s.info.pop(RELOAD_KEY, False):
            return self.load(s)
        ids = set(touched(s) or ())
        out: Delta = {}
        for entry in new:
            ids.discard(entry.id)
            out[entry.id] = entry
        if ids:
            out.update(self.read(s, ids))
        return out

    def load(self, s: Session) -> Delta:
        """Every job that waits or holds GPUs, as the store has it now (and every job held
        here that no longer does, as gone)."""
        ids = list(
            s.exec(
                select(JobRow.id).where(col(JobRow.phase).in_(ACTIVE_JOB)).order_by(col(JobRow.seq))
            ).all()
        )
        ids += s.exec(select(AttemptRow.job_id).where(col(AttemptRow.ended_at).is_(None))).all()
        gone: Delta = dict.fromkeys(self.jobs)
        return gone | self.read(s, ids)

    def read(self, s: Session, ids: Iterable[str]) -> Delta:
        wanted = list(dict.fromkeys(ids))
        out: Delta = dict.fromkeys(wanted)
        for i in range(0, len(wanted), CHUNK):
            self._read_chunk(s, wanted[i : i + CHUNK], out)
        return out

    def _read_chunk(self, s: Session, ids: list[str], out: Delta) -> None:
        # Whole rows: a job this transaction wrote is already in the session's identity
        # map, and a new one needs its manifest anyway (``QueuedJob``).
        rows = {r.id: r for r in s.exec(select(JobRow).where(col(JobRow.id).in_(ids)))}
        slices: dict[str, list[SliceEntry]] = defaultdict(list)
        for sl in s.exec(select(SliceRow).where(col(SliceRow.job_id).in_(ids))):
            slices[sl.job_id].append(SliceEntry(sl.index, sl.phase, sl.epoch, sl.not_before))
        attempts: dict[str, list[OpenAttempt]] = defaultdict(list)
        for a in s.exec(
            select(AttemptRow).where(
                col(AttemptRow.job_id).in_(ids), col(AttemptRow.ended_at).is_(None)
            )
        ):
            attempts[a.job_id].append(
                OpenAttempt(
                    a.index,
                    a.epoch,
                    a.cluster,
                    a.node,
                    tuple(a.gpus),
                    a.assigned_at,
                    a.started_at,
                    a.preempted_for,
                )
            )
        live = [j for j in ids if j in rows and (rows[j].phase in ACTIVE_JOB or attempts.get(j))]
        queued: dict[str, QueuedJob | None] = {}
        for j in live:
            e = self.jobs.get(j)
            if e is not None and e.queued is not None:
                queued[j] = e.queued  # what a job asks for never changes: read once
                continue
            try:
                queued[j] = QueuedJob.of(rows[j])
            except ValueError as exc:  # stored before today's limits
                queued[j] = None
                if rows[j].phase in ACTIVE_JOB:
                    self.broken[j] = exc
        for j in live:
            r = rows[j]
            out[j] = JobEntry(
                j,
                r.phase,
                r.version,
                r.started_at,
                r.checkpoint_at,
                tuple(sorted(slices.get(j, ()), key=lambda x: x.index)),
                tuple(attempts.get(j, ())),
                queued.get(j),
            )

    # ---- the event loop: apply what a committed transaction read ------------------------

    def apply(self, delta: Delta) -> None:
        if not self._overflow:
            self._changed.update(delta)
            if len(self._changed) > 2 * len(self.jobs) + 10_000:
                self._changed, self._overflow = set(), True
        for job_id, entry in delta.items():
            old = self.holding.get(job_id)
            if old is not None:
                self._attempts_on.subtract(a.cluster for a in old.attempts)
            if entry is not None:
                self._attempts_on.update(a.cluster for a in entry.attempts)
            if entry is None:
                self.jobs.pop(job_id, None)
            else:
                self.jobs[job_id] = entry
            if entry is not None and entry.attempts:
                self.holding[job_id] = entry
            else:
                self.holding.pop(job_id, None)
