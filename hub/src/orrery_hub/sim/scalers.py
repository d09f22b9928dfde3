"""The scaling rules the serving simulator compares, each behind one small interface:

- ``Kpa``: the hub's own autoscaler, ``orrery_hub.serving.autoscale.desired``, called
  unchanged with the samples a gateway would report (requests in flight, held included);
- ``Utilisation``: a CPU-style rule as the Kubernetes HorizontalPodAutoscaler has it with
  its defaults: every 15 s, ``ceil(ready x mean utilisation / target)`` outside a 10%
  tolerance, at most double (or +4) per period up, the highest recommendation of the last
  5 minutes down. Utilisation is the busy fraction of the replicas' request slots, so it
  cannot exceed 100%: like CPU, it does not see the requests queued in front of it;
- ``Fixed``: always the same count (the baseline).

Each gets an ``Observation`` every ``sample_s`` of simulated time and answers a replica
count; pure, no clock (``t`` is passed in).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from orrery.service_manifest import Autoscale, Replicas
from orrery_hub.serving.autoscale import Memory, Sample, desired


@dataclass(frozen=True, slots=True)
class Observation:
    t: float
    concurrency: float  # mean requests in flight over the sample (queued and held included)
    requests: int  # requests that arrived during the sample
    utilization: float | None  # mean busy fraction of the ready replicas' slots
    current: int  # replicas that exist, ready or starting
    ready: int


class Scaler(Protocol):
    name: str

    def initial(self) -> int: ...
    def decide(self, obs: Observation) -> int: ...


class Fixed:
    def __init__(self, replicas: int, name: str | None = None) -> None:
        self.replicas = replicas
        self.name = name or f"fixed-{replicas}"

    def initial(self) -> int:
        return self.replicas

    def decide(self, obs: Observation) -> int:
        return self.replicas


class Kpa:
    """``desired(...)`` as the hub's service controller calls it, on the same samples."""

    name = "kpa"

    def __init__(self, auto: Autoscale, bounds: Replicas) -> None:
        self.auto, self.bounds = auto, bounds
        self.window: deque[Sample] = deque()
        self.memory = Memory()
        # Only the stable window is read (the panic window lies inside it); one sample
        # more, so "covered" (a whole quiet window, for scale to zero) can hold.
        self.keep_s = max(auto.stable_s, auto.panic_s)
        self.reasons: dict[str, int] = {}

    def initial(self) -> int:
        return self.bounds.min if self.auto.scale_to_zero else max(1, self.bounds.min)

    def decide(self, obs: Observation) -> int:
        self.window.append(Sample(t=obs.t, concurrency=obs.concurrency, requests=obs.requests))
        while len(self.window) > 1 and self.window[1].t <= obs.t - self.keep_s:
            self.window.popleft()
        d = desired(self.auto, self.bounds, self.window, obs.current, obs.t, self.memory)
        self.memory = d.memory
        kind = d.reason.split(":")[0]
        self.reasons[kind] = self.reasons.get(kind, 0) + 1
        return d.replicas


class Utilisation:
    """Kubernetes HPA defaults on a utilisation metric (see the module docstring)."""

    name = "cpu"
    SYNC_S = 15.0  # --horizontal-pod-autoscaler-sync-period
    METRIC_S = 30.0  # the metric is a mean over this window, as metrics-server reports it
    TOLERANCE = 0.1
    DOWN_STABILIZATION_S = 300.0

    def __init__(self, bounds: Replicas, target: float = 0.7) -> None:
        self.bounds, self.target = bounds, target
        self.samples: deque[tuple[float, float]] = deque()
        self.recent: deque[tuple[float, int]] = deque()
        self.last_sync = -math.inf
        self.want = self.initial()

    def initial(self) -> int:
        return max(1, self.bounds.min)

    def decide(self, obs: Observation) -> int:
        if obs.utilization is not None:
            self.samples.append((obs.t, obs.utilization))
        while self.samples and self.samples[0][0] <= obs.t - self.METRIC_S:
            self.samples.popleft()
        if obs.t - self.last_sync < self.SYNC_S:
            return self.want
        self.last_sync = obs.t
        if not self.samples or obs.ready == 0:
            return self.want  # no metric yet: HPA leaves the count alone
        util = sum(u for _, u in self.samples) / len(self.samples)
        ratio = util / self.target
        rec = obs.current if abs(ratio - 1) <= self.TOLERANCE else math.ceil(obs.ready * ratio)
        rec = min(rec, max(2 * obs.current, obs.current + 4))  # the default scale-up policy
        self.recent.append((obs.t, rec))
        while self.recent and self.recent[0][0] <= obs.t - self.DOWN_STABILIZATION_S:
            self.recent.popleft()
        if rec < obs.current:
            rec = min(obs.current, max(n for _, n in self.recent))
        self.want = max(max(1, self.bounds.min), min(self.bounds.max, rec))
        return self.want
