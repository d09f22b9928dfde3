"""Run store work on one dedicated thread, so the event loop never blocks on the database
and SQLite sees one writer at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlmodel import Session

from orrery_hub.store import Database

T = TypeVar("T")


class StoreRunner:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orrery-store")

    async def tx(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in one transaction on the store thread."""

        def run() -> T:
            with self.db.session() as s:
                return fn(s)

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.db.close()
