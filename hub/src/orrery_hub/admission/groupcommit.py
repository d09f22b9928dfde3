"""Group commit for admission: submissions that arrive together share one transaction.

A transaction's cost is mostly its commit (an fsync on SQLite, a round trip and a WAL
flush on PostgreSQL), not its rows. So ``AdmissionQueue.submit`` queues a submission (one
manifest from ``POST /v1/jobs``, or many from ``POST /v1/jobs:batch``) and one drain task
hands everything waiting — at most ``max_jobs`` manifests — to a single transaction. Each
submission's future resolves only after that transaction has committed, so a 201 still
means the job's row is durable. While one transaction runs the next batch gathers: the
wait is bounded by one transaction, and there is no timer to tune.

Called by ``runtime.service.HubService``; the work itself (``admit``) runs on the store
thread and decides each manifest on its own (admitted, held, or refused with its reason).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger("orrery.hub.admission")

M = TypeVar("M")  # what is submitted (a manifest)
R = TypeVar("R")  # what each one gets back (its job, or why not)

# Up to four full ``POST /v1/jobs:batch`` requests in one transaction. On SQLite each job
# lands at random places in four indexes; a commit writes every page it dirtied, and
# 4,000 jobs dirty hardly more pages than 1,000 do (``benchmarks/bench_store.py``: the
# commit took 3-6 µs a job rather than 13-16, at 80,000 jobs stored).
MAX_JOBS_PER_COMMIT = 4000


@dataclass
class Submission(Generic[M, R]):
    items: Sequence[M]
    now: float
    done: asyncio.Future[list[R]]


class AdmissionQueue(Generic[M, R]):
    def __init__(
        self,
        admit: Callable[[list[Submission[M, R]]], Awaitable[list[list[R]]]],
        *,
        max_jobs: int = MAX_JOBS_PER_COMMIT,
    ) -> None:
        self._admit = admit
        self._max = max_jobs
        self._queue: deque[Submission[M, R]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0  # transactions run, for the benchmarks' batch-size figure

    async def submit(self, items: Sequence[M], now: float) -> list[R]:
        """Each item's outcome, in order, once the transaction that holds them committed."""
        done: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._queue.append(Submission(items, now, done))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="admission")
        return await done

    def _take(self) -> list[Submission[M, R]]:
        batch = [self._queue.popleft()]  # at least one, however large
        n = len(batch[0].items)
        while self._queue and n + len(self._queue[0].items) <= self._max:
            sub = self._queue.popleft()
            n += len(sub.items)
            batch.append(sub)
        return [s for s in batch if not s.done.cancelled()]  # the caller went away

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if not batch:
                    continue
                try:
                    results = await self._admit(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # The transaction failed as a whole: nothing of it is stored.
                    for sub in batch:
                        if not sub.done.done():
                            sub.done.set_exception(exc)
                    continue
                self.commits += 1
                for sub, result in zip(batch, results, strict=True):
                    if not sub.done.done():
                        sub.done.set_result(result)
        finally:
            self._task = None
            while self._queue:  # shutting down: whoever still waits hears why
                sub = self._queue.popleft()
                if not sub.done.done():
                    sub.done.set_exception(asyncio.CancelledError())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
