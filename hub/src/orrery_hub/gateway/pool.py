"""One service's replicas as a gateway sees them, and which one takes the next request.

Choice is least outstanding requests by the power of two choices (Mitzenmacher): sample
two ready replicas, take the one with fewer requests in flight. It needs no global order,
so several gateways choosing at once do not herd onto one replica. Replicas in the
caller's region go first; another region's take a request only when every local one is
busier than ``SPILL_OUTSTANDING`` more than the remote pick.

Load is measured here too: per replica and per service, the time-weighted mean of
requests in flight over a report interval (what the autoscaler divides by its target),
request and error counts and latency percentiles. No IO: the proxy calls ``begin`` and
``end`` around each request; the sync loop calls ``take_load`` once per interval.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from orrery.service_resources import ReplicaLoad, Route, ServiceLoad

SPILL_OUTSTANDING = 4  # a remote replica this much less busy than the best local one wins
DOWN_S = 2.0  # a replica that refused a connection is left out this long (or until probed)
MAX_SAMPLES = 4096  # latencies kept per interval for percentiles


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Meter:
    """Requests in flight, integrated over time, with counts and latencies."""

    inflight: int = 0
    area: float = 0.0  # sum of inflight x seconds since the interval began
    since: float = 0.0
    last: float = 0.0
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    def _advance(self, now: float) -> None:
        self.area += self.inflight * max(0.0, now - self.last)
        self.last = now

    def up(self, now: float) -> None:
        self._advance(now)
        self.inflight += 1
        self.requests += 1

    def down(self, now: float, latency: float | None, *, error: bool = False) -> None:
        self._advance(now)
        self.inflight -= 1
        if error:
            self.errors += 1
        if latency is not None and len(self.latencies) < MAX_SAMPLES:
            self.latencies.append(latency)

    def take(self, now: float) -> tuple[float, int, int, list[float]]:
        """(mean in flight, requests, errors, latencies) since the last take; resets."""
        self._advance(now)
        span = now - self.since
        mean = self.area / span if span > 0 else float(self.inflight)
        out = (mean, self.requests, self.errors, self.latencies)
        self.area, self.since, self.requests, self.errors, self.latencies = 0.0, now, 0, 0, []
        return out


@dataclass
class Replica:
    job: str
    url: str  # http://host:port
    cluster: str
    region: str | None
    stale: bool = False
    ready: bool = False
    slow_probes: int = 0  # readiness probes timed out in a row while ready (``sync``)
    down_until: float = 0.0
    meter: Meter = field(default_factory=Meter)

    @property
    def outstanding(self) -> int:
        return self.meter.inflight

    def routable(self, now: float) -> bool:
        return self.ready and now >= self.down_until


class Pool:
    """One service's replicas and load at one gateway."""

    def __init__(self, name: str, *, readiness_path: str, scale_to_zero: bool, now: float) -> None:
        self.name = name
        self.readiness_path = readiness_path
        self.scale_to_zero = scale_to_zero
        self.replicas: dict[str, Replica] = {}
        self.meter = Meter(since=now, last=now)
        self.held = 0
        self.ready_event = asyncio.Event()
        self.cold_since: float | None = None  # first request held with nothing ready
        self.cold_start_s: float | None = None  # reported once, then cleared

    def update(self, routes: Iterable[Route], *, now: float) -> None:
        """The hub's current routes: new replicas start unready (the prober checks them),
        gone ones leave (their requests in flight finish on their own)."""
        seen = set()
        for r in routes:
            seen.add(r.job)
            url = f"http://{r.endpoint}"
            cur = self.replicas.get(r.job)
            if cur is None or cur.url != url:
                cur = Replica(job=r.job, url=url, cluster=r.cluster, region=r.region)
                cur.meter = Meter(since=now, last=now)
                self.replicas[r.job] = cur
            cur.stale = r.stale
        for job in [j for j in self.replicas if j not in seen]:
            del self.replicas[job]
        self._signal(now)

    def set_ready(self, job: str, ready: bool, now: float) -> None:
        r = self.replicas.get(job)
        if r is None:
            return
        r.ready = ready
        if ready:
            r.down_until = 0.0
        self._signal(now)

    def mark_down(self, r: Replica, now: float) -> None:
        """It refused or dropped a connection: out until the prober sees it ready again."""
        r.ready = False
        r.down_until = now + DOWN_S
        self._signal(now)

    def _signal(self, now: float) -> None:
        if any(r.routable(now) for r in self.replicas.values()):
            if self.cold_since is not None:
                self.cold_start_s = now - self.cold_since
                self.cold_since = None
            self.ready_event.set()
        else:
            self.ready_event.clear()

    def candidates(self, now: float, exclude: set[str]) -> list[Replica]:
        ready = [r for r in self.replicas.values() if r.routable(now) and r.job not in exclude]
        fresh = [r for r in ready if not r.stale]
        return fresh or ready

    def pick(
        self, now: float, region: str | None, rng: random.Random, exclude: set[str]
    ) -> Replica | None:
        cands = self.candidates(now, exclude)
        if not cands:
            return None
        local = [r for r in cands if region is not None and r.region == region]
        remote = [r for r in cands if r not in local] if local else cands
        best = _two_choices(local, rng) if local else None
        other = _two_choices(remote, rng) if remote else None
        if best is None:
            return other
        if other is not None and other.outstanding + SPILL_OUTSTANDING < best.outstanding:
            return other
        return best

    def take_load(self, now: float) -> ServiceLoad:
        mean, requests, errors, lat = self.meter.take(now)
        reps = []
        for r in self.replicas.values():
            rm, rq, re, rl = r.meter.take(now)
            reps.append(
                ReplicaLoad(
                    job=r.job,
                    concurrency=rm,
                    requests=rq,
                    errors=re,
                    latency_p95_s=percentile(rl, 0.95),
                    ready=r.ready,
                )
            )
        cold, self.cold_start_s = self.cold_start_s, None
        return ServiceLoad(
            name=self.name,
            concurrency=mean,
            held=self.held,
            requests=requests,
            errors=errors,
            latency_p50_s=percentile(lat, 0.5),
            latency_p95_s=percentile(lat, 0.95),
            cold_start_s=cold,
            replicas=reps,
        )


def _two_choices(cands: list[Replica], rng: random.Random) -> Replica:
    if len(cands) == 1:
        return cands[0]
    a, b = rng.sample(cands, 2)
    return a if a.outstanding <= b.outstanding else b
