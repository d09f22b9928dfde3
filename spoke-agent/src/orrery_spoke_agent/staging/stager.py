"""The dataset cache of one cluster: stage each dataset version once, however many slices
wait for it, and report what the cache holds in every heartbeat.

The agent calls :meth:`Stager.acquire` before it launches a slice that reads datasets (the
slice counts as a user of each from then on) and :meth:`Stager.release` when the slice
ends. Layout under the cache folder::

    <name>/<version>/...        a staged dataset, as under its prefix in the object store
    <name>/<version>.json       its marker: size and last use (read back at start)
    .partial/<name>-<version>   a copy in progress, renamed into place when complete

Copies run as tasks the agent supervises (``spawn``); each catches its own failure and
reports it, so one bad dataset never stops the agent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from orrery.wire import CachedDataset, DataMount, DatasetState, SliceKey
from orrery.wire.messages import clip
from orrery_spoke_agent.staging.cache import CacheEntry, CacheFull, evictions
from orrery_spoke_agent.staging.copy import copy_prefix

log = logging.getLogger("orrery.spoke.staging")

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]
Key = tuple[str, str]


class StagingError(Exception):
    """A dataset could not be staged; ``reason`` says why. Retryable: another cluster, or
    this one later, may manage."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Stager:
    def __init__(
        self,
        root: Path,
        *,
        limit_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
        spawn: Spawn | None = None,
    ) -> None:
        self.root = root
        self.limit_bytes = limit_bytes
        self.clock = clock
        self._spawn = spawn
        self.entries: dict[Key, CacheEntry] = {}
        self.failed: dict[Key, CacheEntry] = {}
        self._done: dict[Key, asyncio.Event] = {}
        self._copies: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one eviction plan at a time

    def bind(self, spawn: Spawn) -> None:
        self._spawn = spawn

    # ---- startup -------------------------------------------------------------------

    def load(self) -> None:
        """Read back what an earlier agent staged (its markers); drop partial copies."""
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.root / ".partial", ignore_errors=True)
        for marker in self.root.glob("*/*.json"):
            try:
                meta = json.loads(marker.read_text())
                entry = CacheEntry(
                    name=marker.parent.name,
                    version=marker.stem,
                    size_bytes=int(meta["size_bytes"]),
                    ready=True,
                    last_used=float(meta.get("last_used", 0.0)),
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if (marker.parent / marker.stem).is_dir():
                entry.bytes_done = entry.size_bytes
                self.entries[entry.key] = entry

    # ---- slices --------------------------------------------------------------------

    def path(self, name: str, version: str) -> Path:
        return self.root / name / version

    async def acquire(self, user: SliceKey, mounts: Sequence[DataMount]) -> dict[str, Path]:
        """Stage every dataset ``user`` reads (waiting on copies already under way) and
        count it as their user; their paths by name. Raises StagingError."""
        out: dict[str, Path] = {}
        try:
            for m in mounts:
                if m.uri.startswith("/"):
                    out[m.name] = Path(m.uri)  # already on this cluster: nothing to copy
                    continue
                out[m.name] = await self._one(user, m)
        except BaseException:
            await self.release(user)
            raise
        return out

    async def _one(self, user: SliceKey, m: DataMount) -> Path:
        key = (m.name, m.version)
        async with self._lock:
            entry = self.entries.get(key)
            if entry is None:
                entry = await self._admit(m)
            entry.users.add(user)
            done = self._done.get(key)
        if done is not None:
            await done.wait()
        if key in self.failed and key not in self.entries:
            raise StagingError(f"dataset {m.name}: {self.failed[key].reason}")
        entry.last_used = self.clock()
        return self.path(m.name, m.version)

    async def _admit(self, m: DataMount) -> CacheEntry:
        key = (m.name, m.version)
        try:
            gone = evictions(self.entries.values(), m.size_bytes, self.limit_bytes)
        except CacheFull as exc:
            raise StagingError(f"dataset {m.name}: {exc.reason}") from None
        for old in gone:
            log.info("evicting dataset %s/%s (least recently used)", old.name, old.version)
            del self.entries[old.key]
            await asyncio.to_thread(self._delete, old.name, old.version)
        entry = CacheEntry(m.name, m.version, m.size_bytes, sample=(self.clock(), 0))
        self.entries[key] = entry
        self.failed.pop(key, None)
        self._done[key] = asyncio.Event()
        assert self._spawn is not None, "Stager.bind(spawn) before staging"
        task = self._spawn(self._copy(entry, m))
        self._copies.add(task)
        task.add_done_callback(self._copies.discard)
        return entry

    def stop(self) -> None:
        """Cancel the copies under way (the agent is stopping); their partial folders are
        dropped at the next start."""
        for task in list(self._copies):
            task.cancel()

    async def prefetch(self, mounts: Sequence[DataMount]) -> None:
        """Start copying what is not cached or being copied yet, and return (the hub chose
        this cluster for a job still waiting for GPUs). No slice reads it yet: it may be
        evicted like any unused dataset. One that cannot fit is skipped (the assignment
        tries again)."""
        for m in mounts:
            if m.uri.startswith("/"):
                continue
            async with self._lock:
                if (m.name, m.version) in self.entries:
                    continue
                try:
                    await self._admit(m)
                except StagingError as exc:
                    log.info("prefetch of %s skipped: %s", m.name, exc.reason)
                    continue
            log.info("prefetching dataset %s/%s", m.name, m.version)

    async def release(self, user: SliceKey) -> None:
        now = self.clock()
        touched = []
        for e in self.entries.values():
            if user in e.users:
                e.users.discard(user)
                e.last_used = now
                touched.append(e)
        for e in touched:
            if e.ready:
                await asyncio.to_thread(self._write_marker, e)

    # ---- the copy ------------------------------------------------------------------

    async def _copy(self, entry: CacheEntry, m: DataMount) -> None:
        key = entry.key
        partial = self.root / ".partial" / f"{m.name}-{m.version}"

        def progress(n: int) -> None:
            entry.bytes_done += n

        try:
            await asyncio.to_thread(shutil.rmtree, partial, True)
            copied = await copy_prefix(m.uri, m.endpoint, m.region, partial, progress)
            await asyncio.to_thread(self._install, partial, m.name, m.version)
            entry.size_bytes = entry.bytes_done = copied
            entry.ready = True
            await asyncio.to_thread(self._write_marker, entry)
            log.info("staged dataset %s/%s: %d bytes", m.name, m.version, copied)
        except asyncio.CancelledError:
            entry.reason = "staging stopped: the agent is stopping"
            entry.users.clear()
            self.entries.pop(key, None)
            self.failed[key] = entry
            raise
        except Exception as exc:  # the copy's failure is the dataset's, not the agent's
            # obstore's messages carry a multi-line debug dump after the first line.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = clip(f"staging failed: {type(exc).__name__}: {first}", 1024)
            log.warning("dataset %s/%s %s", m.name, m.version, reason)
            entry.reason = reason
            entry.users.clear()  # every waiter gets the error; none reads it
            self.entries.pop(key, None)
            self.failed[key] = entry
            await asyncio.to_thread(shutil.rmtree, partial, True)
        finally:
            done = self._done.pop(key, None)
            if done is not None:
                done.set()

    def _install(self, partial: Path, name: str, version: str) -> None:
        target = self.path(name, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)

    def _write_marker(self, e: CacheEntry) -> None:
        marker = self.root / e.name / f"{e.version}.json"
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"size_bytes": e.size_bytes, "last_used": e.last_used}))
        tmp.replace(marker)

    def _delete(self, name: str, version: str) -> None:
        (self.root / name / f"{version}.json").unlink(missing_ok=True)
        shutil.rmtree(self.path(name, version), ignore_errors=True)

    # ---- the report ----------------------------------------------------------------

    def report(self) -> list[CachedDataset]:
        now = self.clock()
        out = []
        for e in [*self.entries.values(), *self.failed.values()]:
            rate, eta = 0.0, None
            if not e.ready and e.reason is None and e.sample is not None:
                t0, b0 = e.sample
                if now > t0:
                    rate = max(0.0, (e.bytes_done - b0) / (now - t0))
                    e.sample = (now, e.bytes_done)
                    left = max(0, e.size_bytes - e.bytes_done)
                    eta = left / rate if rate > 0 else None
            state = (
                DatasetState.READY
                if e.ready
                else DatasetState.FAILED
                if e.reason
                else DatasetState.STAGING
            )
            out.append(
                CachedDataset(
                    name=e.name,
                    version=e.version,
                    state=state,
                    size_bytes=e.size_bytes,
                    bytes_done=min(e.bytes_done, 2**63 - 1),
                    rate_bps=rate,
                    eta_s=eta,
                    in_use=len(e.users),
                    last_used=e.last_used or None,
                    reason=e.reason,
                )
            )
        return out

    def in_use(self) -> Mapping[Key, int]:
        return {k: len(e.users) for k, e in self.entries.items() if e.users}
