"""Request-rate traces for the serving simulator: a synthetic day (seeded), a CSV reader,
and the arrivals drawn from a rate trace (also seeded, so every policy replays the very
same requests).

A rate trace is one rate per second (requests per second, piecewise constant). The CSV
form is ``t,rps`` rows with ascending ``t`` in seconds; a row holds until the next one.

The synthetic day is not a measurement of any real service: it is a made-up diurnal
curve (a trough at 04:00 of ``trough`` x peak, the peak at 16:00) with slow noise, and
bursts at random times that add up to 1.5 x peak for one to five minutes. Same seed,
same trace.
"""

from __future__ import annotations

import math
import random
from array import array
from dataclasses import dataclass
from pathlib import Path

from orrery_hub.sim.trace import TraceError

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Burst:
    start: int  # second of the trace
    length: int  # seconds
    extra: float  # requests per second added at the burst's height


@dataclass(frozen=True, slots=True)
class RateTrace:
    rps: array[float]  # one rate per second
    bursts: tuple[Burst, ...] = ()
    source: str = "synthetic"

    @property
    def seconds(self) -> int:
        return len(self.rps)


def synthetic_day(
    *,
    seed: int = 1,
    seconds: int = DAY_S,
    start_s: int = 0,
    peak_rps: float = 100.0,
    trough: float = 0.1,
    bursts_per_day: float = 8.0,
) -> RateTrace:
    """A seeded diurnal day with bursts (see the module docstring); ``start_s`` is the
    time of day the trace begins at (0: midnight)."""
    if (seconds <= 0 or start_s < 0 or peak_rps <= 0 or not 0 <= trough <= 1
            or bursts_per_day < 0):
        raise TraceError("synthetic trace: seconds and peak must be positive, trough in 0..1")
    rng = random.Random(seed)
    noise: list[float] = []
    level = 1.0
    for _ in range(seconds // 60 + 2):  # slow noise: a bounded random walk, per minute
        level = min(1.15, max(0.85, level + rng.gauss(0.0, 0.02)))
        noise.append(level)
    rps = array("d", [0.0]) * seconds
    for s in range(seconds):
        phase = 2 * math.pi * ((start_s + s) % DAY_S - 4 * 3600) / DAY_S  # trough at 04:00
        diurnal = trough + (1 - trough) * (0.5 - 0.5 * math.cos(phase))
        lo, hi = noise[s // 60], noise[s // 60 + 1]  # linear between minutes: no steps
        rps[s] = peak_rps * diurnal * (lo + (hi - lo) * (s % 60) / 60)
    count = _poisson(rng, bursts_per_day * seconds / DAY_S)
    bursts: list[Burst] = []
    for _ in range(count):
        b = Burst(start=rng.randrange(seconds), length=rng.randint(60, 300),
                  extra=peak_rps * rng.uniform(0.5, 1.5))
        bursts.append(b)
        for s in range(b.start, min(seconds, b.start + b.length)):
            ramp = min(1.0, (s - b.start + 1) / 5)  # five seconds up: sudden, not a step
            rps[s] += b.extra * ramp
    bursts.sort(key=lambda b: b.start)
    return RateTrace(rps=rps, bursts=tuple(bursts), source=f"synthetic (seed {seed})")


def read_rates(path: Path) -> RateTrace:
    """A ``t,rps`` CSV (a header row is allowed) as one rate per second."""
    points: list[tuple[float, float]] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cells = line.split(",")
        if len(cells) != 2:
            raise TraceError(f"{path}: line {n}: want two columns t,rps, got {len(cells)}")
        try:
            t, r = float(cells[0]), float(cells[1])
        except ValueError:
            if not points and n == 1:
                continue  # a header
            raise TraceError(f"{path}: line {n}: t and rps must be numbers") from None
        if not (math.isfinite(t) and math.isfinite(r)) or t < 0 or r < 0:
            raise TraceError(f"{path}: line {n}: t and rps must be finite and not negative")
        if points and t <= points[-1][0]:
            raise TraceError(f"{path}: line {n}: t must increase ({t:g} after "
                             f"{points[-1][0]:g})")
        points.append((t, r))
    if not points:
        raise TraceError(f"{path}: no rows")
    if len(points) == 1:
        points.append((points[0][0] + 1, points[0][1]))  # one row: one second of it
    end = math.ceil(points[-1][0]) + 1
    if end > 31 * DAY_S:
        raise TraceError(f"{path}: longer than 31 days")
    rps = array("d", [0.0]) * end
    for (t, r), (t_next, _) in zip(points, [*points[1:], (float(end), 0.0)], strict=True):
        for s in range(int(t), math.ceil(t_next)):
            rps[s] = r
    return RateTrace(rps=rps, source=str(path))


def arrivals(trace: RateTrace, step_s: float, seed: int) -> array[int]:
    """Requests arriving in each step of ``step_s``: Poisson at the trace's rate."""
    rng = random.Random(seed ^ 0x5EED)
    steps = round(trace.seconds / step_s)
    out = array("l", [0]) * steps
    for k in range(steps):
        out[k] = _poisson(rng, trace.rps[min(trace.seconds - 1, int(k * step_s))] * step_s)
    return out


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:  # the normal approximation is close enough here and O(1)
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:  # Knuth
        k += 1
        p *= rng.random()
    return k
