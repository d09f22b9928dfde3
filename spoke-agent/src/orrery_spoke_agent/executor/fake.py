"""A fake executor, for testing the agent alone: slices "run" until the test ends them.

It keeps the same promises as the real ones (``wait`` returns once, after the end;
``terminate`` ends a slice as killed), with no processes behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from orrery.wire import Assignment, NodeReport, Progress, SliceKey
from orrery_spoke_agent.executor.base import Found, LaunchError, LogMissing, LogStream, Outcome

K = tuple[str, int, int]


class MemoryLog:
    """A fake slice's output, as a test wrote it (``FakeExecutor.write``)."""

    def __init__(self, fake: FakeExecutor, k: K, tail_lines: int | None, follow: bool) -> None:
        self.fake, self.k, self.follow = fake, k, follow
        buf = fake.output[k]
        self.pos = 0
        if tail_lines is not None:
            lines = bytes(buf).splitlines(keepends=True)
            self.pos = len(buf) - sum(len(x) for x in lines[len(lines) - tail_lines :])
        self.limit = None if follow else len(buf)

    async def read(self, max_bytes: int, wait_s: float) -> tuple[bytes, bool]:
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            ended = self.fake._future(self.k).done()
            buf = self.fake.output[self.k]
            end = len(buf) if self.limit is None else self.limit
            data = bytes(buf[self.pos : min(end, self.pos + max_bytes)])
            if data:
                self.pos += len(data)
                return data, False
            left = deadline - asyncio.get_running_loop().time()
            if not self.follow or ended:
                return b"", True
            if left <= 0:
                return b"", False
            try:
                await asyncio.wait_for(self.fake.changed.wait(), left)
            except TimeoutError:
                pass

    async def close(self) -> None:
        self.fake.closed_logs += 1


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
        self.output: dict[K, bytearray] = {}
        self.changed = asyncio.Event()  # set and replaced when output is written or ends
        self.closed_logs = 0
        self.removed: set[K] = set()  # output removed, as after the spoke's retention

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
        self._changed()

    def write(self, key: SliceKey, text: str) -> None:
        """The test says: this slice printed ``text``."""
        self.output.setdefault(self._k(key), bytearray()).extend(text.encode())
        self._changed()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def open_log(self, key: SliceKey, *, tail_lines: int | None, follow: bool) -> LogStream:
        k = self._k(key)
        if k in self.removed:
            raise LogMissing("removed after retention")
        if k not in self._ends and k not in self.output:
            raise LogMissing("never ran here")
        self.output.setdefault(k, bytearray())
        self._future(k)
        return MemoryLog(self, k, tail_lines, follow)

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
        self._changed()

    def progress(self, key: SliceKey) -> Progress | None:
        return None

    def listen_port(self, key: SliceKey) -> int | None:
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
