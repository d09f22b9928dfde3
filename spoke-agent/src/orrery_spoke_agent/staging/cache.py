"""What the dataset cache holds, and which entries to evict for a new one. No IO: the
stager (``stager.py``) asks :func:`evictions` and deletes what it names.

Eviction is least-recently-used among entries no slice reads now. An entry in use is never
evicted: a dataset that cannot fit without evicting one fails to stage (the hub places the
slice again) rather than pulling data from under a running slice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from orrery.wire import SliceKey


@dataclass
class CacheEntry:
    name: str
    version: str
    size_bytes: int
    ready: bool = False
    bytes_done: int = 0
    last_used: float = 0.0
    users: set[SliceKey] = field(default_factory=set)
    reason: str | None = None  # why staging failed
    # (time, bytes_done) at the previous report: the rate is measured between reports.
    sample: tuple[float, int] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)

    @property
    def in_use(self) -> bool:
        return bool(self.users)


class CacheFull(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def evictions(entries: Iterable[CacheEntry], need: int, limit: int | None) -> list[CacheEntry]:
    """The entries to delete, oldest use first, so that ``need`` more bytes fit under
    ``limit``; raises :class:`CacheFull` when even evicting every unused entry is not
    enough. Entries being staged count at their full size (they will grow to it)."""
    entries = list(entries)
    if limit is None:
        return []
    used = sum(e.size_bytes for e in entries)
    if used + need <= limit:
        return []
    out: list[CacheEntry] = []
    candidates = sorted((e for e in entries if e.ready and not e.in_use), key=lambda e: e.last_used)
    for e in candidates:
        out.append(e)
        used -= e.size_bytes
        if used + need <= limit:
            return out
    busy = sum(e.size_bytes for e in entries if e.in_use or not e.ready)
    raise CacheFull(
        f"dataset cache full: {need} bytes needed, limit {limit}, "
        f"{busy} bytes held by datasets in use or being staged"
    )
