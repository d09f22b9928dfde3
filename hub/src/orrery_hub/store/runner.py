"""Run store work on one dedicated thread, so the event loop never blocks on the database
and SQLite sees one writer at a time.

With a ``JobDb`` attached, every transaction also keeps the hub's in-memory job database
up to date: the jobs it touched are read back inside it, and what was read is applied on
the event loop once it has committed (``orrery_hub.apply.jobdb``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sqlmodel import Session

from orrery_hub.store import Database

T = TypeVar("T")


class Observer(Protocol):
    """Sees every transaction: ``begin`` before the work, ``collect`` after it (still
    inside the transaction), ``apply`` what was collected once it has committed."""

    loaded: bool

    def load(self, s: Session) -> Any: ...

    def begin(self, s: Session) -> None: ...

    def collect(self, s: Session) -> Any: ...

    def apply(self, delta: Any) -> None: ...


class StoreRunner:
    def __init__(self, db: Database, jobdb: Observer | None = None) -> None:
        self.db = db
        self.jobdb = jobdb
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orrery-store")

    async def tx(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in one transaction on the store thread."""
        jobs = self.jobdb

        def run() -> tuple[T, list[Any]]:
            with self.db.session() as s:
                if jobs is None:
                    return fn(s), []
                deltas = [] if jobs.loaded else [jobs.load(s)]  # the first: everything
                jobs.begin(s)
                out = fn(s)
                deltas.append(jobs.collect(s))
                return out, deltas

        out, deltas = await asyncio.get_running_loop().run_in_executor(self._pool, run)
        if jobs is not None:
            for delta in deltas:
                jobs.apply(delta)
            jobs.loaded = True
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.db.close()
