"""The pure autoscaler, driven by a fake clock: tables of load over time and the replica
count KPA's rules give for them."""

from __future__ import annotations

import pytest

from orrery.service_manifest import Autoscale, Replicas
from orrery_hub.serving.autoscale import Memory, Sample, desired
from orrery_hub.serving.controller import Replica, plan_replicas


def auto(**kw: object) -> Autoscale:
    base: dict[str, object] = {"targetConcurrency": 10, "stableWindow": "60s", "panicWindow": "6s"}
    return Autoscale.model_validate({**base, **kw})


def steady(level: float, start: float, end: float, every: float = 1.0) -> list[Sample]:
    """One sample per second of ``level`` requests in flight from ``start`` to ``end``."""
    out, t = [], start
    while t <= end:
        out.append(Sample(t=t, concurrency=level, requests=int(level) * 10))
        t += every
    return out


BOUNDS = Replicas(min=1, max=16)


@pytest.mark.parametrize(
    ("level", "current", "want"),
    [
        (0, 1, 1),  # idle, never below min
        (10, 1, 1),  # exactly the target
        (11, 1, 2),  # one over: a second replica
        (35, 4, 4),  # 35 / 10 -> 4
        (500, 4, 16),  # bounded by max
    ],
)
def test_stable_mode_divides_concurrency_by_the_target(
    level: float, current: int, want: int
) -> None:
    window = steady(level, 0, 120)
    d = desired(auto(), BOUNDS, window, current, now=120)
    assert d.replicas == want, d.reason


def test_a_burst_panics_within_the_panic_window_and_scales_at_once() -> None:
    # A minute at 5 in flight, then 6 s at 40: the stable mean is still low, the panic
    # window wants 4 = 4x the one replica there is.
    window = steady(5, 0, 60) + steady(40, 61, 66)
    d = desired(auto(), BOUNDS, window, current=1, now=66)
    assert d.panic and d.replicas == 4, d.reason
    # The stable window alone would have said 1.
    calm = desired(auto(panicWindow="60s"), BOUNDS, window, current=1, now=66)
    assert not calm.panic


def test_panic_never_scales_down_until_a_stable_window_passes() -> None:
    a = auto()
    window = steady(5, 0, 60) + steady(40, 61, 66)
    d = desired(a, BOUNDS, window, current=1, now=66)
    assert d.panic and d.replicas == 4
    # The burst ends: 10 s later the panic window is quiet, but panic holds the peak.
    later = window + steady(0, 67, 76)
    d2 = desired(a, BOUNDS, later, current=4, now=76, memory=d.memory)
    assert d2.panic and d2.replicas == 4, d2.reason
    # A whole stable window after the last panic condition: back to stable mode.
    much_later = later + steady(0, 77, 130)
    d3 = desired(a, BOUNDS, much_later, current=4, now=130, memory=d2.memory)
    assert not d3.panic and d3.replicas == 1, d3.reason


def test_scale_down_delay_holds_the_highest_recent_recommendation() -> None:
    a = auto(scaleDownDelay="30s", stableWindow="10s", panicWindow="5s")
    mem = Memory()
    counts = []
    for t in range(0, 80):
        level = 30 if t < 20 else 0
        window = steady(level, max(0, t - 20), t) if t < 20 else (
            steady(30, 0, 19) + steady(0, 20, t)
        )
        d = desired(a, BOUNDS, window, current=3, now=t, memory=mem)
        mem = d.memory
        counts.append(d.replicas)
    assert counts[19] == 3
    # The load stopped at 20: the 10 s stable window is quiet by 30, but the delay holds
    # 3 replicas until 30 s after the last recommendation of 3.
    assert counts[35] == 3
    assert counts[-1] == 1


def test_scale_to_zero_after_a_quiet_stable_window_and_back_on_a_request() -> None:
    a = auto(scaleToZero=True)
    b = Replicas(min=0, max=4)
    busy = steady(5, 0, 30)
    quiet = [Sample(t=float(t), concurrency=0) for t in range(31, 100)]
    # 40 s after the last request: the 60 s window still saw traffic, so keep one.
    assert desired(a, b, busy + quiet, current=1, now=70).replicas == 1
    # 60 s after: to zero.
    assert desired(a, b, busy + quiet, current=1, now=95).replicas == 0
    # A request arrives while at zero: the gateway holds it and reports it in flight.
    woken = [*busy, *quiet, Sample(t=100.0, concurrency=1, requests=1)]
    d = desired(a, b, woken, current=0, now=100)
    assert d.replicas == 1 and "activating" in d.reason


def test_without_scale_to_zero_a_quiet_service_keeps_one() -> None:
    d = desired(auto(), Replicas(min=1, max=4), steady(0, 0, 200), current=2, now=200)
    assert d.replicas == 1


@pytest.mark.parametrize(
    ("signal", "value", "target", "current", "want"),
    [
        ("queue_depth", 12.0, {"queueDepth": 4}, 2, 6),  # 2 x 12 / 4
        ("kv_cache", 0.9, {"kvCacheUtilization": 0.6}, 2, 3),  # 2 x 0.9 / 0.6
        ("ttft_p95", 2.0, {"ttftP95": "0.5s"}, 2, 4),  # 8 by ratio, at most doubled
        ("queue_depth", 1.0, {"queueDepth": 4}, 2, 1),  # under target: concurrency decides
    ],
)
def test_llm_signals_scale_proportionally_and_the_largest_wins(
    signal: str, value: float, target: dict[str, object], current: int, want: int
) -> None:
    window = [Sample(t=float(t), concurrency=5, **{signal: value}) for t in range(0, 61)]
    d = desired(auto(**target), BOUNDS, window, current=current, now=60)
    assert d.replicas == want, d.reason


def test_signals_not_asked_for_are_ignored() -> None:
    window = [Sample(t=float(t), concurrency=5, queue_depth=100) for t in range(0, 61)]
    assert desired(auto(), BOUNDS, window, current=2, now=60).replicas == 1


def test_an_empty_window_keeps_the_minimum() -> None:
    assert desired(auto(), Replicas(min=2, max=4), [], current=3, now=10).replicas == 2


# ---- replica planning: counts and the rolling update ---------------------------------


def reps(*specs: tuple[str, bool]) -> list[Replica]:
    """("new", True): a replica of template "new", ready."""
    return [Replica(index=i, job=f"j{i}", template=t, ready=r) for i, (t, r) in enumerate(specs)]


def test_too_few_are_added_and_too_many_cancelled_not_ready_first() -> None:
    assert plan_replicas(reps(("t", True)), "t", 3) == (2, [])
    live = reps(("t", True), ("t", False), ("t", True))
    add, cancel = plan_replicas(live, "t", 2)
    assert add == 0 and [r.job for r in cancel] == ["j1"]


def test_a_rolling_update_goes_one_surge_replica_at_a_time_gated_on_readiness() -> None:
    # Two old replicas, want two: one surge replica of the new template first.
    old2 = reps(("old", True), ("old", True))
    assert plan_replicas(old2, "new", 2) == (1, [])
    # The surge replica is starting: nothing else happens until it is ready.
    starting = [*old2, Replica(index=2, job="j2", template="new", ready=False)]
    assert plan_replicas(starting, "new", 2) == (0, [])
    # Ready: one old replica goes.
    ready = [*old2, Replica(index=2, job="j2", template="new", ready=True)]
    add, cancel = plan_replicas(ready, "new", 2)
    assert add == 0 and len(cancel) == 1 and cancel[0].template == "old"
    # One old, one new ready: the next surge replica.
    half = [old2[0], Replica(index=2, job="j2", template="new", ready=True)]
    assert plan_replicas(half, "new", 2) == (1, [])
    # Enough new ones: the last old one goes.
    done = [old2[0], *(Replica(index=i, job=f"j{i}", template="new", ready=True) for i in (2, 3))]
    add, cancel = plan_replicas(done, "new", 2)
    assert add == 0 and [r.job for r in cancel] == ["j0"]
