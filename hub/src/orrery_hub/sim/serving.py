"""Replay a request-rate trace against a scaling rule: replica-hours, latency, drops.

The model, in steps of ``step_s`` of simulated time (no clock, no IO; same inputs, same
result):

- each ready replica serves ``slots`` requests at once, each for ``service_time_s``;
- requests beyond the free slots wait in one FIFO (the gateway balances across replicas,
  so the queue is in effect shared), bounded at ``queue`` per ready replica, or ``hold``
  while no replica is ready (the gateway holds them for a replica to come); an arrival
  over the bound is refused, and a request that waited ``timeout_s`` is given up: both
  count as dropped;
- a replica added by the rule is ready ``cold_start_s`` later (placement, image, model
  load) and costs replica-time from the moment it is added; one removed stops taking
  requests at once and finishes those it has;
- every ``sample_s`` the rule sees what a gateway and the replicas would report
  (``scalers.Observation``) and answers a count.

A request's latency is its wait plus the service time; percentiles are over the requests
served. The arrivals are drawn once from the trace (``rates.arrivals``), so every rule
replays exactly the same requests.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orrery_hub.sim.scalers import Observation, Scaler


@dataclass(frozen=True, slots=True)
class Model:
    service_time_s: float = 0.5
    slots: int = 10  # requests one replica serves at once
    queue: int = 20  # requests waiting per ready replica
    hold: int = 1000  # held while no replica is ready (the gateway's --max-held)
    timeout_s: float = 30.0  # given up after waiting this long (the gateway's --hold)
    cold_start_s: float = 30.0
    step_s: float = 0.1
    sample_s: float = 2.0  # the autoscaler's tick (KPA's default is 2 s)

    def __post_init__(self) -> None:
        for name in ("service_time_s", "step_s", "sample_s", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.slots < 1 or self.queue < 0 or self.hold < 0 or self.cold_start_s < 0:
            raise ValueError("slots must be at least 1; queue, hold and cold start >= 0")
        if self.sample_s < self.step_s:
            raise ValueError("sample_s must be at least step_s")


@dataclass
class Result:
    policy: str
    model: Model
    seconds: float
    replica_seconds: float = 0.0
    served: int = 0
    refused: int = 0  # the queue was full
    timed_out: int = 0  # waited longer than the timeout
    waits: dict[int, int] = field(default_factory=dict)  # wait in steps -> requests
    added: int = 0  # replicas added (each a cold start)
    peak_replicas: int = 0
    replicas: list[int] = field(default_factory=list)  # per sample, for plots

    @property
    def dropped(self) -> int:
        return self.refused + self.timed_out

    def latency(self, q: float) -> float | None:
        """The ``q`` quantile of served requests' latency, seconds."""
        if self.served == 0:
            return None
        rank = max(1, math.ceil(q * self.served))
        seen = 0
        for wait in sorted(self.waits):
            seen += self.waits[wait]
            if seen >= rank:
                return wait * self.model.step_s + self.model.service_time_s
        raise AssertionError("unreachable: the waits sum to served")

    def summary(self) -> dict[str, Any]:
        total = self.served + self.dropped
        return {
            "policy": self.policy,
            "replica_hours": round(self.replica_seconds / 3600, 2),
            "mean_replicas": round(self.replica_seconds / self.seconds, 3),
            "peak_replicas": self.peak_replicas,
            "cold_starts": self.added,
            "requests": total,
            "served": self.served,
            "dropped": self.dropped,
            "refused": self.refused,
            "timed_out": self.timed_out,
            "dropped_pct": round(100 * self.dropped / total, 4) if total else 0.0,
            "latency_p50_s": self.latency(0.50),
            "latency_p95_s": self.latency(0.95),
            "latency_p99_s": self.latency(0.99),
        }


def replay(arrivals: Sequence[int] | array[int], model: Model, scaler: Scaler) -> Result:
    """Run ``scaler`` on the arrivals (one count per step); see the module docstring."""
    step = model.step_s
    n = len(arrivals)
    res = Result(policy=scaler.name, model=model, seconds=n * step)
    per_sample = max(1, round(model.sample_s / step))
    serve_steps = max(1, math.ceil(model.service_time_s / step - 1e-9))
    timeout_steps = math.ceil(model.timeout_s / step - 1e-9)
    cold_steps = math.ceil(model.cold_start_s / step - 1e-9)
    slots, queue_per, hold = model.slots, model.queue, model.hold
    held = 0  # of the queued, those a gateway took while no replica was ready
    ready = scaler.initial()
    starting: deque[int] = deque()  # the step each starting replica becomes ready
    queue: deque[list[int]] = deque()  # [arrival step, count], oldest first
    queued = 0
    service: deque[tuple[int, int]] = deque()  # (finish step, count)
    in_service = 0
    waits = res.waits
    replica_steps = 0
    area = busy = capacity = 0  # this sample's sums of in flight, busy and free slots
    sample_requests = 0
    for k in range(n):
        while starting and starting[0] <= k:
            starting.popleft()
            ready += 1
        while service and service[0][0] <= k:
            in_service -= service.popleft()[1]
        while queue and queue[0][0] < k - timeout_steps:
            c = queue.popleft()[1]
            queued -= c
            held = max(0, held - c)
            res.timed_out += c
        a = arrivals[k]
        if a:
            queue.append([k, a])
            queued += a
            sample_requests += a
        free = ready * slots - in_service
        if free > 0 and queued:
            started = 0
            while queue and free > 0:
                cohort = queue[0]
                m = cohort[1] if cohort[1] <= free else free
                waits[k - cohort[0]] = waits.get(k - cohort[0], 0) + m
                free -= m
                started += m
                cohort[1] -= m
                if cohort[1] == 0:
                    queue.popleft()
            queued -= started
            held = max(0, held - started)
            in_service += started
            res.served += started
            service.append((k + serve_steps, started))
        # Held requests go to the first replica ready, all at once, beyond its own queue.
        over = queued - held - ready * queue_per if ready else queued - hold
        if a and over > 0 and queue[-1][0] == k:  # refuse this step's, as a full server
            cohort = queue[-1]
            m = min(cohort[1], over)
            cohort[1] -= m
            queued -= m
            res.refused += m
            if cohort[1] == 0:
                queue.pop()
        if not ready:
            held = queued  # the oldest are first out: held ones leave before any other
        replicas = ready + len(starting)
        replica_steps += replicas
        area += in_service + queued
        busy += in_service
        capacity += ready * slots
        if (k + 1) % per_sample:
            continue
        obs = Observation(
            t=(k + 1) * step,
            concurrency=area / per_sample,
            requests=sample_requests,
            utilization=min(1.0, busy / capacity) if capacity else None,
            current=replicas,
            ready=ready,
        )
        area = busy = capacity = sample_requests = 0
        want = scaler.decide(obs)
        if want > replicas:
            for _ in range(want - replicas):
                starting.append(k + 1 + cold_steps)
            res.added += want - replicas
        elif want < replicas:
            drop = replicas - want
            while drop and starting:  # those not ready yet go first
                starting.pop()
                drop -= 1
            ready -= drop
        res.peak_replicas = max(res.peak_replicas, want, replicas)
        res.replicas.append(ready + len(starting))
    res.replica_seconds = replica_steps * step
    res.timed_out += queued  # still waiting when the trace ends: never served
    return res


def compare(
    arrivals: Sequence[int] | array[int],
    model: Model,
    scalers: Sequence[Scaler],
) -> list[dict[str, Any]]:
    """Each rule on the same arrivals; the summaries in the order given."""
    return [replay(arrivals, model, s).summary() for s in scalers]


COLUMNS = (  # (summary key, width, format)
    ("replica_hours", 14, ",.1f"), ("mean_replicas", 14, ".2f"), ("cold_starts", 12, ","),
    ("latency_p95_s", 14, ".2f"), ("latency_p99_s", 14, ".2f"), ("dropped", 10, ","),
    ("dropped_pct", 12, ".3f"),
)


def table(summaries: Sequence[dict[str, Any]]) -> str:
    """The comparison as fixed-width text ("-" for a latency where nothing was served)."""
    lines = ["policy      " + "".join(f"{c:>{w}}" for c, w, _ in COLUMNS)]
    for s in summaries:
        cells = [f"{'-' if s[c] is None else format(s[c], f):>{w}}" for c, w, f in COLUMNS]
        lines.append(f"{s['policy']:<12}" + "".join(cells))
    return "\n".join(lines)
