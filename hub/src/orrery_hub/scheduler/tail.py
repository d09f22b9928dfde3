"""The end of a pass over a full fleet, when the snapshot keeps its order
(``Snapshot.order``, ``waitlist``), and the early end of one over a fleet with GPUs free
whose jobs left are all known to fail (``_rest_known``). Part of ``cycle._Pass``; pure.

Once no GPU is free, the pass offers only jobs that may still preempt, one per kind
(shape, priority, queue) until a preemption succeeds, and every other job only needs its
wait reason (``cycle._tail``). Walking 90,000 jobs to find the few dozen worth an attempt
was most of an incremental pass. With the order kept per tenant and kind, a heap over
each live kind's next job finds them in the same order, and the reasons are written a
shape at a time with set and dict operations in C.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right

from orrery.ids import ClusterName
from orrery_hub.scheduler.evict import Evicting
from orrery_hub.scheduler.plan import WaitReason
from orrery_hub.scheduler.reasons import why
from orrery_hub.scheduler.snapshot import JobRequest
from orrery_hub.scheduler.waitlist import Alike, Kind, Ordered, kind_of

Reasons = dict[tuple[int, frozenset[str] | None, frozenset[ClusterName] | None, int], WaitReason]
_Entry = tuple[int, tuple[float, int, int, int], int, tuple[str, Kind]]


class KeptTail(Evicting):
    """``cycle._Pass``'s tail for a kept order; see the module doc."""

    def _one(self, job: JobRequest) -> None:
        raise NotImplementedError  # cycle._Pass

    def _rest_known(self) -> tuple[bool, int]:
        """With GPUs still free, the walk goes on while any job left may change the pass.
        Once every kind of job with a job left in the kept order has failed since the last
        change (and no job that is always searched is left), each job left would only be
        told its kind's reason: told here, a kind at a time, and the walk ends. The same
        plan as the walk (``tests/hub/test_scheduler_shortcuts.py``); 80,000 queued jobs
        of a GPU type no cluster has had cost a walk each pass while new jobs arrived.
        Returns (done, how many kinds it looked at)."""
        order, failed, offered = self.order, self.failed_kinds, self.offered
        if (
            order is None
            or self.free_left <= 0
            or (len(self.placements), len(self.preemptions), len(self.reservations))
            != self.failed_at
            or (order.cpu and not order.cpu <= offered)
        ):
            return False, 0
        kinds = order.alike

        def open_(k: Alike | None) -> bool:  # jobs left that a search must see
            return (k is None or k not in failed) and not kinds[k] <= offered

        # The kind that kept the walk going last time most likely still does: asked first.
        if self.unsettled in kinds and open_(self.unsettled):
            return False, 1
        looked = 0
        for k in kinds:
            looked += 1
            if open_(k):
                self.unsettled = k
                return False, looked
        if any(j not in offered and any(j in ids for ids in kinds.values())
               for j in self.inflight):  # fmt: skip
            return False, looked  # always searched: its preemption is under way
        groups = self.waiting_groups
        for k, ids in kinds.items():
            if k is not None and k in failed:
                groups.append((ids - offered, failed[k]))
        return True, looked

    def _rest_by_shape(self, cache: Reasons) -> bool:
        """Every job not offered yet gets the reason for its shape, as the pass leaves
        capacity (``cache``: reasons already written, per shape; jobs alike in shape get
        the text of one of them). False, having done nothing, without a kept order or
        when a job with CPU-only slices is among them (it may still be placed)."""
        order = self.order
        if order is None:
            return False
        offered = self.offered
        if order.cpu and not order.cpu <= offered:
            return False
        groups = self.waiting_groups
        for rk, (rep, ids) in order.shapes.items():
            key = (rk[0], rk[1], rk[2], rk[3])
            r = cache.get(key)
            if r is None:
                r = cache[key] = why(rep, rk[3], self.fits)
            groups.append((ids - offered if offered else ids, r))
        return True

    def _tail_kept(self, first: JobRequest) -> bool:
        """``cycle._tail`` for a kept order: the same attempts, in the same order, without
        looking at the jobs in between. False, having done nothing, where it cannot (no
        kept order, or CPU-only jobs waiting: ``cycle._tail`` walks them all then)."""
        order = self.order
        if order is None or (order.cpu and not order.cpu <= self.offered):
            return False
        segs = self.offer.rest_segments()
        rank = {t: i for i, (t, _) in enumerate(segs)}
        heads = {t: order.keys[t][h] for t, h in segs if h < len(order.keys[t])}
        lowest = min(
            (r.priority for r in self.running if r.preemptible and not r.stopping),
            default=None,
        )
        q = self.quota
        dead: set[Kind] = set()

        def live(kind: Kind) -> bool:
            return kind not in dead and (
                (lowest is not None and kind[4] > lowest)
                or (q is not None and q.within_guarantee(kind[5], kind[0] * kind[3]))
            )

        def attempt(job: JobRequest, kind: Kind) -> bool:
            """``_one`` as ``cycle._tail`` calls it; True when it changed what the next
            jobs see (something placed or preempted)."""
            preempted, placed = len(self.preemptions), len(self.placements)
            self.offered.add(job.id)
            self._one(job)
            if len(self.preemptions) == preempted:
                dead.add(kind)
            else:
                dead.clear()
            return len(self.preemptions) != preempted or len(self.placements) != placed

        def heap_after(pos: tuple[int, tuple[float, int, int, int] | None]) -> list[_Entry]:
            """Each live kind's next job after ``pos`` (rank of its tenant's segment, key)."""
            heap: list[_Entry] = []
            for tk, (keys, _) in order.kinds.items():
                r = rank.get(tk[0])
                head = heads.get(tk[0])
                if r is None or head is None or r < pos[0] or not live(tk[1]):
                    continue
                i = bisect_left(keys, head)
                if r == pos[0] and pos[1] is not None:
                    i = max(i, bisect_right(keys, pos[1]))
                if i < len(keys):
                    heap.append((r, keys[i], i, tk))
            heapq.heapify(heap)
            return heap

        if first.pending and self._may_still_preempt():
            kind = kind_of(first)
            if live(kind):
                attempt(first, kind)
        heap = heap_after((-1, None))
        while heap and self._may_still_preempt():
            r, key, i, tk = heapq.heappop(heap)
            if tk[1] in dead:
                continue
            if attempt(order.kinds[tk][1][i], tk[1]):
                heap = heap_after((r, key))
            # else the kind is dead: none of its jobs is offered again this pass
        self._rest_by_shape({})
        return True


__all__ = ["KeptTail", "Ordered"]
