"""Reports in, one lane per cluster, so that no report waits behind the store.

Every report reaches the hub through one NATS subscription, whose callbacks nats.py runs
one after another, and the store has one thread, which a scheduling pass over a long
queue can hold for seconds. Had the callback waited for the store, every spoke's
heartbeat would wait behind every pass, past the spokes' leases (issue 10: 48-57 s with
100,000 pending jobs). So the callback hands each report to its cluster's lane and
returns. A lane processes its cluster's reports in arrival order, one store transaction
each, and keeps only the newest heartbeat waiting: heartbeats are complete, so an older
one says nothing that the newer does not.

The hub answers a heartbeat once it is processed or after ``Timing.ack_wait_s``,
whichever comes first (``ReportIntake._answer`` in ``runtime.intake``): that bound holds
whatever the store is doing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger("orrery.hub.intake")

T = TypeVar("T")


@dataclass
class _Item(Generic[T]):
    work: Callable[[], Awaitable[T]]
    coalesce: bool
    done: asyncio.Future[T | None]


class Lanes(Generic[T]):
    """Per-key FIFO queues of async work, each drained by its own task."""

    def __init__(self) -> None:
        self._queues: dict[str, list[_Item[T]]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def submit(
        self, key: str, work: Callable[[], Awaitable[T]], *, coalesce: bool = False
    ) -> asyncio.Future[T | None]:
        """Queue ``work`` on ``key``'s lane. With ``coalesce``, it replaces any coalescible
        work still waiting there (whose future then resolves to None: superseded). The
        future resolves to the work's result, or None if it was superseded or failed."""
        q = self._queues.setdefault(key, [])
        if coalesce:
            for old in [i for i in q if i.coalesce]:
                q.remove(old)
                old.done.set_result(None)
        done: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
        q.append(_Item(work, coalesce, done))
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._drain(key), name=f"lane {key}")
        return done

    def waiting(self, key: str) -> int:
        """Work queued on ``key``'s lane, not counting what it is doing now."""
        return len(self._queues.get(key, ()))

    def busy(self, key: str) -> bool:
        """Whether ``key``'s lane has work queued or in hand."""
        return key in self._tasks

    async def _drain(self, key: str) -> None:
        q = self._queues[key]
        try:
            while q:
                item = q.pop(0)
                result: T | None = None
                try:
                    result = await item.work()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # One report failing must not stop the next; the next heartbeat retries.
                    log.exception("handling a report failed", extra={"cluster": key})
                if not item.done.done():
                    item.done.set_result(result)
        finally:
            del self._tasks[key]
            for item in q:
                if not item.done.done():
                    item.done.set_result(None)
            q.clear()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
