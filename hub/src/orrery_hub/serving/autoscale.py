"""How many replicas a service should have: a pure function, like Knative's KPA.

    desired(spec, window, current, now, memory) -> Decision(replicas, memory, reason)

``window`` is the service's recent metric samples (what the gateways measured, summed over
gateways, and what the replicas reported of their own load); ``now`` is passed in, never
read, so tests drive it with a fake clock and the simulator replays a day in a second.

The rules, as KPA has them:

- **Stable mode.** Recommend ``ceil(mean concurrency over stableWindow / target)``.
- **Panic mode.** When the mean over the short ``panicWindow`` asks for at least twice the
  replicas there are now, scale to that at once and never scale down while panicking;
  panic ends once a whole stable window has passed without the condition.
- **Scale-down delay.** The recommendation is the largest one of the last
  ``scaleDownDelay`` seconds, so a short lull does not drop replicas that come back.
- **Scale to zero** (where asked): no request for a whole stable window → 0; any request
  waiting at a gateway while there are 0 → 1 at once (the gateway holds it meanwhile).
- **LLM signals** where the replicas report them: queue depth, KV-cache use and TTFT p95,
  each scaled proportionally (``ceil(ready x observed / target)``); the largest
  recommendation of all signals wins, then ``replicas.min``/``max`` bound it.

Called by the hub's service controller (``orrery_hub.serving.controller``) and the
autoscaling simulator (``orrery_hub.sim.scalers``, ``orrery sim --serving``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from orrery.service_manifest import Autoscale, Replicas

PANIC_THRESHOLD = 2.0  # KPA's 200%: panic when the short window asks for twice as many
MAX_SCALE_UP_RATE = 1000.0  # KPA's default: at most this many times the ready replicas


@dataclass(frozen=True, slots=True)
class Sample:
    """One moment of a service's load. ``concurrency``: requests in flight at the gateways
    (held ones included), averaged over the sampling interval. The rest are the replicas'
    own reports, averaged over ready replicas; None where none reported."""

    t: float
    concurrency: float
    queue_depth: float | None = None
    kv_cache: float | None = None
    ttft_p95: float | None = None
    requests: int = 0  # requests that arrived in the interval (for scale to zero)


@dataclass(frozen=True, slots=True)
class Memory:
    """What the autoscaler keeps between calls: panic state and recent recommendations."""

    panic_since: float | None = None
    panic_peak: int = 0  # never scale below this while panicking
    recent: tuple[tuple[float, int], ...] = ()  # (t, recommendation) for the delay window


@dataclass(frozen=True, slots=True)
class Decision:
    replicas: int
    memory: Memory
    reason: str
    panic: bool = False


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _since(window: Sequence[Sample], start: float, now: float) -> list[Sample]:
    return [s for s in window if start < s.t <= now]


def _proportional(ready: int, observed: float | None, target: float | None) -> int:
    if observed is None or target is None:
        return 0
    return math.ceil(max(ready, 1) * observed / target - 1e-9)


def _clamp(n: int, bounds: Replicas, scale_to_zero: bool) -> int:
    low = bounds.min if scale_to_zero else max(bounds.min, 1)
    return max(low, min(bounds.max, n))


def desired(
    auto: Autoscale,
    bounds: Replicas,
    window: Sequence[Sample],
    current: int,
    now: float,
    memory: Memory = Memory(),
) -> Decision:
    """The replica count to aim for now. ``current`` is the replicas that exist (ready or
    starting): the base panic and proportional signals compare against."""
    stable = _since(window, now - auto.stable_s, now)
    panic = _since(window, now - auto.panic_s, now)
    target = auto.target_concurrency
    stable_c = _mean([s.concurrency for s in stable]) or 0.0
    panic_c = _mean([s.concurrency for s in panic]) or 0.0
    stable_want = math.ceil(stable_c / target - 1e-9)
    panic_want = math.ceil(panic_c / target - 1e-9)

    # LLM signals: the replicas' own view of their load, over the stable window.
    def avg(attr: str) -> float | None:
        vals = [getattr(s, attr) for s in stable if getattr(s, attr) is not None]
        return _mean(vals)

    ttft = auto.ttft_p95_s
    extra = max(
        _proportional(current, avg("queue_depth"), auto.queue_depth),
        _proportional(current, avg("kv_cache"), auto.kv_cache_utilization),
        _proportional(current, avg("ttft_p95"), ttft),
    )
    # TTFT does not fall linearly with replicas: never more than double on it alone.
    if ttft is not None:
        extra = min(extra, max(2 * current, 1))
    want = max(stable_want, extra)
    reason = f"stable: {stable_c:.1f} in flight / target {target:g}"
    if extra > stable_want:
        reason = "replica load (queue depth, KV cache or TTFT) over target"

    # Panic: the short window wants at least twice what there is.
    panicking = memory.panic_since is not None
    base = max(current, 1)
    if panic_want >= PANIC_THRESHOLD * base and panic_want > current:
        if not panicking:
            memory = replace(memory, panic_since=now, panic_peak=0)
            panicking = True
        else:
            memory = replace(memory, panic_since=now)  # renewed: the condition still holds
    elif (
        panicking and memory.panic_since is not None and (now - memory.panic_since >= auto.stable_s)
    ):
        memory = replace(memory, panic_since=None, panic_peak=0)
        panicking = False
    if panicking:
        peak = max(memory.panic_peak, panic_want, want, current)
        memory = replace(memory, panic_peak=peak)
        want = peak
        reason = f"panic: {panic_c:.1f} in flight over {auto.panic_s:g}s / target {target:g}"

    # Scale-up rate bound, as KPA: a burst cannot ask for a thousand times the fleet.
    want = min(want, math.ceil(MAX_SCALE_UP_RATE * base))

    # Scale to zero: only after a whole stable window without a request.
    if auto.scale_to_zero:
        quiet = window and all(s.requests == 0 and s.concurrency <= 0 for s in stable)
        covered = bool(window) and min(s.t for s in window) <= now - auto.stable_s
        if want == 0 and not (quiet and covered) and current > 0:
            want = 1  # recent traffic: keep one until the window is quiet
        if current == 0 and (panic_c > 0 or any(s.requests for s in panic)):
            want = max(want, 1)  # a request is waiting at a gateway: activate
            reason = "activating: requests held at a gateway"
    elif want == 0:
        want = 1

    # Scale-down delay: the largest recommendation of the last scaleDownDelay seconds.
    recent = tuple((t, n) for t, n in memory.recent if t > now - auto.scale_down_delay_s)
    recent = (*recent, (now, want))
    memory = replace(memory, recent=recent)
    held = max(n for _, n in recent)
    if held > want:
        reason = f"scale-down delay: holding {held} (wanted {want})"
        want = held
    final = _clamp(want, bounds, auto.scale_to_zero)
    if final != want:
        reason += f"; bounded by replicas {bounds.min}..{bounds.max}"
    return Decision(replicas=final, memory=memory, reason=reason, panic=panicking)
