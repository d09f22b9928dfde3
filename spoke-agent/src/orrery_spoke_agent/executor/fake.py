"""A fake executor, for testing the agent alone: slices "run" until the test ends them.

It keeps the same promises as the real ones (``wait`` returns once, after the end;
``terminate`` ends a slice as killed), with no processes behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from orrery.wire import Assignment, NodeReport, Progress, SliceKey
from orrery_spoke_agent.executor.base import Found, LaunchError, Outcome

K = tuple[str, int, int]


class FakeExecutor:
    name = "fake"

    def __init__(self, *, found: list[Found] | None = None) -> None:
        self.launched: list[Assignment] = []
        self.env: dict[K, dict[str, str]] = {}
        self.terminated: list[tuple[K, str]] = []
        self.lease_renewals = 0
        self.fail_launch: str | None = None
        self._ends: dict[K, asyncio.Future[Outcome]] = {}
        self._found = found or []

    @staticmethod
    def _k(key: SliceKey) -> K:
        return (key.job, key.index, key.epoch)

    def _future(self, k: K) -> asyncio.Future[Outcome]:
        if k not in self._ends:
            self._ends[k] = asyncio.get_running_loop().create_future()
        return self._ends[k]

    async def launch(self, a: Assignment, env: Mapping[str, str]) -> float:
        if self.fail_launch:
            raise LaunchError(self.fail_launch)
        self.launched.append(a)
        self.env[self._k(a.key)] = dict(env)
        self._future(self._k(a.key))
        return time.time()

    def finish(self, key: SliceKey, exit_code: int) -> None:
        """The test says: this slice exited with ``exit_code``."""
        fut = self._future(self._k(key))
        if not fut.done():
            fut.set_result(Outcome(exit_code=exit_code, reason=None, finished_at=time.time()))

    async def wait(self, key: SliceKey) -> Outcome:
        return await self._future(self._k(key))

    async def terminate(self, key: SliceKey, grace_s: float, reason: str) -> None:
        k = self._k(key)
        self.terminated.append((k, reason))
        fut = self._future(k)
        if not fut.done():
            fut.set_result(
                Outcome(exit_code=None, reason=reason, finished_at=time.time(), killed=True)
            )

    def progress(self, key: SliceKey) -> Progress | None:
        return None

    def capacity(self) -> list[NodeReport] | None:
        return None

    async def discover(self) -> list[Found]:
        for f in self._found:
            if f.outcome is None:
                self._future(self._k(f.assignment.key))
        return list(self._found)

    async def release(self, key: SliceKey) -> None:
        return None

    async def renew_lease(self, now: float) -> None:
        self.lease_renewals += 1

    async def close(self) -> None:
        return None
