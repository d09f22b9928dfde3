"""Quotas with borrowing, as Kueue's ClusterQueues and cohorts do. Called by ``cycle.plan``
(admission) and ``preemption`` (reclaim).

Each queue may have a guaranteed number of GPUs (its nominal quota). Within its guarantee
a queue is always admitted (capacity permitting). Past it, the queue borrows: allowed
only when it belongs to a cohort, within its ``borrow_limit``, and while the cohort as a
whole stays within the sum of its members' guarantees — that is, only the guarantee other
members leave idle is lent. When an owner wants its guarantee back, its job may reclaim
it by preempting jobs of borrowing queues in the same cohort (see ``preemption``).

Quotas count every GPU a queue holds, of any type and in any cluster: a fleet-wide budget,
not a per-cluster one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from orrery_hub.scheduler.snapshot import QueueConfig, RunningJob


class QuotaBook:
    """GPUs in use per queue and per cohort during one pass; mutable as it places."""

    def __init__(self, queues: Mapping[str, QueueConfig], running: Iterable[RunningJob]) -> None:
        self.queues = queues
        self.usage: dict[str, int] = {}
        for r in running:
            self.usage[r.queue] = self.usage.get(r.queue, 0) + r.gpus
        self.cohort_nominal: dict[str, int] = {}
        for q in queues.values():
            if q.cohort is not None:
                self.cohort_nominal[q.cohort] = (
                    self.cohort_nominal.get(q.cohort, 0) + (q.guaranteed or 0)
                )
        self.cohort_usage: dict[str, int] = {c: 0 for c in self.cohort_nominal}
        for name, used in self.usage.items():
            c = self.cohort(name)
            if c is not None:
                self.cohort_usage[c] += used

    def cohort(self, queue: str) -> str | None:
        q = self.queues.get(queue)
        return q.cohort if q is not None else None

    def guaranteed(self, queue: str) -> int | None:
        q = self.queues.get(queue)
        return q.guaranteed if q is not None else None

    def within_guarantee(self, queue: str, gpus: int) -> bool:
        g = self.guaranteed(queue)
        return g is not None and self.usage.get(queue, 0) + gpus <= g

    def borrowed(self, queue: str) -> int:
        g = self.guaranteed(queue)
        if g is None:
            return 0
        return max(0, self.usage.get(queue, 0) - g)

    def cohort_shortfall(self, queue: str, gpus: int) -> int:
        """GPUs the cohort must get back before ``gpus`` more fit in its guarantees."""
        c = self.cohort(queue)
        if c is None:
            return 0
        return max(0, self.cohort_usage[c] + gpus - self.cohort_nominal[c])

    def refusal(self, queue: str, gpus: int) -> str | None:
        """Why ``gpus`` more GPUs for ``queue`` are refused now; None when admitted."""
        q = self.queues.get(queue)
        if q is None or q.guaranteed is None:
            return None
        used = self.usage.get(queue, 0)
        after = used + gpus
        if after <= q.guaranteed:
            return None
        if q.cohort is None:
            return f"queue {queue} at its quota ({used} of {q.guaranteed} GPUs in use)"
        borrow = after - q.guaranteed
        if q.borrow_limit is not None and borrow > q.borrow_limit:
            return f"queue {queue} would borrow {borrow} GPUs, limit {q.borrow_limit}"
        short = self.cohort_shortfall(queue, gpus)
        if short > 0:
            return (
                f"cohort {q.cohort} has no idle quota to lend "
                f"({self.cohort_usage[q.cohort]} of {self.cohort_nominal[q.cohort]} GPUs in use)"
            )
        return None

    def charge(self, queue: str, gpus: int) -> None:
        self.usage[queue] = self.usage.get(queue, 0) + gpus
        c = self.cohort(queue)
        if c is not None:
            self.cohort_usage[c] += gpus
