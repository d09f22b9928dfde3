"""What waits for placement, kept from pass to pass and told only what changed (as
Armada's job database keeps its queues): a pass over a long queue with ten changes looks
at ten jobs, not at the queue.

The job database (``apply.jobdb``) hands each pass the entries changed since the last
(``JobDb.drain``); ``Pending.update`` files them, and ``Pending.settle`` decides again,
for those and for the few whose standing depends on the clock (a retry backoff running
out) or on ``broken``, which slices are free to be offered (``ready``) and why the rest
is held back (``blocked``). A job's standing depends on its own entry alone: its slices'
phases and backoffs, and its own open attempts (a slice whose last epoch still stops).

Also kept, for the pass's data inputs: the waiting jobs that read datasets and those
restarting near a checkpoint. Called by ``apply.gather`` (and the loop) on one pass at a
time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from orrery.ids import SliceIndex
from orrery_hub.apply.jobdb import JobEntry
from orrery_hub.apply.queued import QueuedJob

Ready = tuple[QueuedJob, tuple[SliceIndex, ...]]


def waiting(e: JobEntry) -> bool:
    """A slice of ``e`` waits for placement (what the pass's data inputs are read for)."""
    return e.queued is not None and any(x.phase == "Pending" for x in e.slices)


class Pending:
    def __init__(self) -> None:
        self.entries: dict[str, JobEntry] = {}
        self.versions: dict[str, int] = {}  # active jobs: the version the commit checks
        self.ready: dict[str, Ready] = {}  # the job and its slices free to be offered
        self.blocked: dict[str, str] = {}  # job -> why (some of) its slices are held back
        self.reading: dict[str, tuple[str, ...]] = {}  # waiting jobs -> datasets they read
        self.restarted: set[str] = set()  # waiting jobs with a checkpoint
        self.touched: set[str] = set()  # jobs ``settle`` decided again (for the requests)
        self._dirty: set[str] = set()
        self._clocked: set[str] = set()  # in backoff or broken: decided again every pass

    def update(self, changes: Mapping[str, JobEntry | None]) -> None:
        entries, versions = self.entries, self.versions
        for jid, e in changes.items():
            self._dirty.add(jid)
            self.reading.pop(jid, None)
            self.restarted.discard(jid)
            if e is None:
                entries.pop(jid, None)
                versions.pop(jid, None)
                continue
            entries[jid] = e
            if e.active:
                versions[jid] = e.version
            else:
                versions.pop(jid, None)
            if waiting(e) and e.queued is not None:
                if e.queued.datasets:
                    self.reading[jid] = e.queued.datasets
                if e.checkpoint_at is not None:
                    self.restarted.add(jid)

    def load(self, entries: Iterable[JobEntry]) -> None:
        """``entries`` are all the jobs there are: those held here and not among them are
        gone, those changed are filed (found by identity: entries are replaced whole)."""
        new = {e.id: e for e in entries}
        changes: dict[str, JobEntry | None] = {j: None for j in self.entries if j not in new}
        old = self.entries
        changes.update((j, e) for j, e in new.items() if old.get(j) is not e)
        self.update(changes)

    def settle(self, now: float, broken: Mapping[str, Exception] | None) -> None:
        todo = self._dirty | self._clocked
        if broken:
            todo.update(j for j in broken if j in self.entries)
        self._clocked = set()
        try:
            for jid in todo:
                self._decide(jid, now, broken)
        except BaseException:
            self._dirty |= todo  # decided again by the next pass
            raise
        self._dirty, self.touched = set(), todo

    def _decide(self, jid: str, now: float, broken: Mapping[str, Exception] | None) -> None:
        e = self.entries.get(jid)
        self.blocked.pop(jid, None)
        if e is None or not e.active or e.queued is None:
            self.ready.pop(jid, None)
            return
        if broken and jid in broken:
            self.ready.pop(jid, None)
            self._clocked.add(jid)  # failed by this pass's commit, or offered again
            return
        slices = [(sl.index, sl.not_before) for sl in e.slices if sl.phase == "Pending"]
        stopping = {a.index: (a.epoch, a.cluster) for a in e.attempts}
        free: list[SliceIndex] = []
        for index, not_before in slices:
            old = stopping.get(index)
            if old is not None:
                self.blocked[jid] = f"waiting for slice {index} epoch {old[0]} to stop on {old[1]}"
            elif not_before > now:
                self.blocked[jid] = f"retry backoff: {not_before - now:.1f}s left"
                self._clocked.add(jid)
            else:
                free.append(SliceIndex(index))
        q = e.queued
        if (q.gang and len(free) < len(slices)) or not free:
            self.ready.pop(jid, None)  # a gang is placed whole, once every member is free
            return
        indices = tuple(sorted(free))
        kept = self.ready.get(jid)
        if kept is None or kept[0] is not q or kept[1] != indices:
            self.ready[jid] = (q, indices)
