"""In what order one pass offers jobs to placement. Called by ``cycle.plan``.

Three orders, chosen by ``Policy``:

* ``fifo``: submission order alone (the simulator's baseline).
* default: priority, then submission order, across every queue (the first release).
* ``fair_share``: weighted dominant-resource fairness between tenants (queues, or teams).
  Only GPUs are counted, so a tenant's dominant share is its GPUs held divided by its
  weight: the tenant furthest below its share offers its next job, and every placement
  this pass raises that tenant's share at once, so the next free GPUs go to whoever now
  has least. Within a tenant: priority, then submission order.

Why a heap of tenants rather than one global sort key: shares change as the pass places,
so the order cannot be known up front.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from operator import attrgetter

from orrery_hub.scheduler.snapshot import JobRequest, Policy, QueueConfig, RunningJob


def order(jobs: Iterable[JobRequest]) -> list[JobRequest]:
    """Priority order, then submission order."""
    return sorted(jobs, key=lambda j: (-j.priority, j.seq))


def tenant_of(policy: Policy, queue: str, team: str) -> str:
    return team if policy.tenant == "team" else queue


def tenant_usage(policy: Policy, running: Iterable[RunningJob]) -> dict[str, float]:
    """GPUs each tenant holds now (stopping jobs count until they stop)."""
    usage: dict[str, float] = {}
    for r in running:
        t = tenant_of(policy, r.queue, r.team)
        usage[t] = usage.get(t, 0.0) + r.gpus
    return usage


def jain(values: Iterable[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one has everything."""
    xs = list(values)
    if not xs:
        return 1.0
    sq = sum(x * x for x in xs)
    if sq == 0:
        return 1.0
    return sum(xs) ** 2 / (len(xs) * sq)


class Offer:
    """Yields jobs in the policy's order; ``charge`` after each placement."""

    def __init__(
        self,
        jobs: Iterable[JobRequest],
        policy: Policy,
        queues: Mapping[str, QueueConfig],
        running: Iterable[RunningJob],
    ) -> None:
        self.policy = policy
        self._fair = policy.fair_share and not policy.fifo
        self._charged: float = 0.0
        if not self._fair:
            # Two stable sorts with C-level keys beat one sort on a Python tuple key.
            self._flat = sorted(jobs, key=attrgetter("seq"))
            if not policy.fifo:
                self._flat.sort(key=attrgetter("priority"), reverse=True)
            self._pos = 0
            return
        self.usage = tenant_usage(policy, running)
        by_tenant: dict[str, list[JobRequest]] = {}
        for j in jobs:
            by_tenant.setdefault(tenant_of(policy, j.queue, j.team), []).append(j)
        self._lists: dict[str, list[JobRequest]] = {}
        self._heads: dict[str, int] = {}
        self._weights: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        for t, js in by_tenant.items():
            js.sort(key=attrgetter("seq"))
            js.sort(key=attrgetter("priority"), reverse=True)
            self._lists[t] = js
            self._heads[t] = 0
            q = queues.get(t)
            self._weights[t] = q.weight if q is not None and q.weight > 0 else 1.0
            self._heap.append((self.share(t), t))
        heapq.heapify(self._heap)

    def share(self, tenant: str) -> float:
        return self.usage.get(tenant, 0.0) / self._weights.get(tenant, 1.0)

    def charge(self, job: JobRequest, gpus: int) -> None:
        if self._fair:
            t = tenant_of(self.policy, job.queue, job.team)
            self.usage[t] = self.usage.get(t, 0.0) + gpus

    def __iter__(self) -> Iterator[JobRequest]:
        if not self._fair:
            while self._pos < len(self._flat):
                self._pos += 1
                yield self._flat[self._pos - 1]
            return
        heap = self._heap
        while heap:
            s, t = heapq.heappop(heap)
            if s != self.share(t):  # charged since it was pushed: shares only grow
                heapq.heappush(heap, (self.share(t), t))
                continue
            i = self._heads[t]
            self._heads[t] = i + 1
            if i + 1 < len(self._lists[t]):
                # Pushed before the yield so that ``rest`` sees it; re-keyed on pop.
                heapq.heappush(heap, (s, t))
            yield self._lists[t][i]

    def rest(self) -> list[JobRequest]:
        """Jobs not offered yet, least-served tenant first: for a pass that has run out of
        capacity and only needs to say why each of them waits."""
        if not self._fair:
            out = self._flat[self._pos :]
            self._pos = len(self._flat)
            return out
        out = []
        for _, t in sorted(self._heap):
            out.extend(self._lists[t][self._heads[t] :])
            self._heads[t] = len(self._lists[t])
        self._heap.clear()
        return out
