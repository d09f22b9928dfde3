"""Per-token rate limit on writes: a token bucket per caller. Pure (the caller gives the
time), so tests drive it with a fake clock.

A bucket holds up to ``burst`` writes and refills at ``rate`` per second; a write that
finds it empty is refused with how long until one token is back (HTTP 429, Retry-After).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_BUCKETS = 100_000  # an idle bucket is full, so forgetting the oldest loses nothing


@dataclass
class _Bucket:
    level: float
    at: float


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, now: float) -> float:
        """0.0 if a write is allowed now (and counted), else the seconds to wait."""
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.pop(next(iter(self._buckets)))
            b = self._buckets[key] = _Bucket(self.burst, now)
        b.level = min(self.burst, b.level + max(0.0, now - b.at) * self.rate)
        b.at = now
        if b.level >= 1.0:
            b.level -= 1.0
            return 0.0
        return (1.0 - b.level) / self.rate


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
