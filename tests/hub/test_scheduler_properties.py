"""Invariants of the scheduler, checked by hypothesis on small random fleets.

1. Preemption never evicts for a job that then does not fit: once the victims are gone,
   the preemptor fits on the nodes held for it, next to everything placed in the pass.
2. No queue is starved: in one pass that places F one-GPU jobs from queues with equal
   starting usage and a backlog each, queue q gets at least floor(F * w_q / W) - 1 of
   them (W the sum of the weights). Over passes the bound compounds: a queue with a
   backlog is never passed over for more than one placement per unit of its weight ratio.
3. Backfill never delays the reserved gang: every job placed on reserved nodes ends by the
   reservation's start, and at that time the gang fits on those nodes.
4. Every GPU is handed out at most once, and only if it was free.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orrery_hub.scheduler import Policy, QueueConfig, Snapshot, plan
from tests.hub.test_scheduler_helpers import fleet, job, jobs, running

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

node_sizes = st.lists(st.sampled_from([2, 4, 8]), min_size=1, max_size=3)


@st.composite
def busy_fleet(draw: st.DrawFn, with_runtime: bool = False):  # type: ignore[no-untyped-def]
    shape = {f"c{i}": draw(node_sizes) for i in range(draw(st.integers(1, 2)))}
    busy = []
    k = 0
    for c, nodes in shape.items():
        for ni, size in enumerate(nodes):
            left = size
            while left > 0 and draw(st.booleans()):
                g = draw(st.integers(1, left))
                left -= g
                busy.append(running(
                    f"r{k}", on=[(c, f"n{ni}", g)], priority=draw(st.integers(0, 3)),
                    queue=draw(st.sampled_from(["A", "B"])),
                    checkpoint=float(draw(st.integers(0, 100))),
                    max_runtime=float(draw(st.integers(1, 300))) if with_runtime else None,
                ))
                k += 1
    return shape, busy


def _check_no_double_booking(snap: Snapshot, p) -> None:  # type: ignore[no-untyped-def]
    free = {(c.name, n.name): set(n.free) for c in snap.clusters for n in c.nodes}
    seen: Counter[tuple[str, str, int]] = Counter()
    for pl in p.placements:
        for g in pl.gpus:
            assert g in free[(pl.cluster, pl.node)]
            seen[(pl.cluster, pl.node, g)] += 1
    assert all(v == 1 for v in seen.values())


@SETTINGS
@given(busy_fleet(), st.integers(1, 8), st.integers(1, 3), st.integers(0, 5), st.data())
def test_preemption_only_for_a_job_that_then_fits(fl, g, n, prio, data) -> None:  # type: ignore[no-untyped-def]
    shape, busy = fl
    waiting = [job("P", gpus=g, slices=n, priority=prio, queue="A")]
    waiting += [job(f"w{i}", gpus=data.draw(st.integers(1, 4)), priority=data.draw(
        st.integers(0, 5))) for i in range(data.draw(st.integers(0, 3)))]
    quotas = data.draw(st.booleans())
    queues = (QueueConfig("A", guaranteed=4, cohort="c"), QueueConfig("B", guaranteed=4,
                                                                      cohort="c"))
    clusters, run_ = fleet(shape, busy)
    snap = Snapshot(clusters, tuple(waiting), run_, queues if quotas else (),
                    Policy(preemption=True, quotas=quotas))
    p = plan(snap, 100.0)
    _check_no_double_booking(snap, p)
    for_jobs = {x.for_job for x in p.preemptions}
    gone = {x.victim for x in p.preemptions}
    assert len(gone) == len(p.preemptions)  # nobody evicted twice
    by_id = {r.id: r for r in run_}
    for pj in for_jobs:
        preemptor = next(j for j in waiting if j.id == pj)
        assert all(by_id[v].priority < preemptor.priority or quotas for v in gone
                   if any(x.victim == v and x.for_job == pj for x in p.preemptions))
        # Free the victims, keep this pass's placements, offer the preemptor alone.
        left = [r for r in run_ if r.id not in gone]
        clusters2, run2 = fleet(shape, left)
        # Subtract this pass's placements from the free lists.
        fixed = []
        for c in clusters2:
            nodes = []
            for nd in c.nodes:
                t = sum(len(pl.gpus) for pl in p.placements
                        if (pl.cluster, pl.node) == (c.name, nd.name))
                nodes.append(type(nd)(nd.name, nd.gpu_type, nd.gpus, nd.free[t:]))
            fixed.append(type(c)(c.name, c.labels, c.ready, tuple(nodes)))
        res = next(r for r in p.reservations if r.job == pj)
        only_held = tuple(
            type(c)(c.name, c.labels, c.ready,
                    tuple(nd for nd in c.nodes if nd.name in res.nodes))
            for c in fixed if c.name == res.cluster
        )
        again = plan(Snapshot(only_held, (preemptor,), run2), 200.0)
        assert len(again.placements) == len(preemptor.pending), (
            "evicted for a job that still does not fit")


@SETTINGS
@given(
    st.lists(st.integers(1, 4), min_size=2, max_size=4),  # weights
    st.lists(st.sampled_from([2, 4, 8]), min_size=1, max_size=6),  # node sizes
)
def test_no_queue_starved_within_a_pass(weights: list[int], nodes: list[int]) -> None:
    names = [chr(ord("A") + i) for i in range(len(weights))]
    waiting = [j for q in names for j in jobs(64, queue=q)]
    queues = [QueueConfig(q, weight=w) for q, w in zip(names, weights, strict=True)]
    clusters, _ = fleet({"c1": nodes})
    p = plan(Snapshot(clusters, tuple(waiting), queues=tuple(queues),
                      policy=Policy(fair_share=True)), 0.0)
    f = len(p.placements)
    assert f == min(sum(nodes), len(waiting))
    got = Counter(str(pl.job).split("-")[0] for pl in p.placements)
    w_total = sum(weights)
    for q, w in zip(names, weights, strict=True):
        assert got[q] >= f * w // w_total - 1, (q, got, weights)


@SETTINGS
@given(busy_fleet(with_runtime=True), st.integers(2, 8), st.integers(1, 2), st.data())
def test_backfill_never_delays_the_reserved_gang(fl, g, n, data) -> None:  # type: ignore[no-untyped-def]
    shape, busy = fl
    gang = job("G", gpus=g, slices=n, priority=100, max_runtime=1000.0)
    small = [job(f"s{i}", gpus=data.draw(st.integers(1, 4)),
                 max_runtime=data.draw(st.one_of(st.none(), st.floats(1, 400))))
             for i in range(data.draw(st.integers(0, 6)))]
    clusters, run_ = fleet(shape, busy)
    now = 0.0
    snap = Snapshot(clusters, (gang, *small), run_, policy=Policy(backfill=True))
    p = plan(snap, now)
    _check_no_double_booking(snap, p)
    res = [r for r in p.reservations if r.job == "G"]
    if not res:
        return
    (r,) = res
    ends = {s.id: now + s.max_runtime if s.max_runtime is not None else float("inf")
            for s in small}
    for pl in p.placements:
        if pl.cluster == r.cluster and pl.node in r.nodes:
            assert ends[pl.job] <= r.start_at, "a backfilled job outlasts the reservation"
    # At the reservation's start, the gang fits on the held nodes: what is free now,
    # plus what running jobs release by then, minus nothing (backfilled ones have ended).
    cap = {nd.name: len(nd.free) for c in clusters if c.name == r.cluster for nd in c.nodes}
    for rj in run_:
        if rj.max_runtime is not None and rj.started_at + rj.max_runtime <= r.start_at:
            for s in rj.slices:
                if s.cluster == r.cluster:
                    cap[s.node] += len(s.gpus)
    assert sum(cap[nm] // g for nm in r.nodes) >= n
