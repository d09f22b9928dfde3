"""The waiting order kept between passes (``scheduler.waitlist``) is the order a pass sorts
itself, after any sequence of changes; and a pass given it plans exactly what it plans
without it: the same placements, preemptions, reservations and reasons."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orrery.ids import ClusterName, JobId, SliceIndex
from orrery_hub.scheduler import JobRequest, Policy, QueueConfig, RunningJob, Snapshot, plan
from orrery_hub.scheduler.fairness import Offer, _sort
from orrery_hub.scheduler.types import single_type_gpus
from orrery_hub.scheduler.waitlist import WaitList, alike_key
from tests.hub.test_scheduler_helpers import fleet, running

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

POLICIES = [
    Policy(),
    Policy(fifo=True),
    Policy(fifo=True, head_of_line=True),
    Policy(fair_share=True),
    Policy(fair_share=True, tenant="team"),
    Policy(shortest_first=True),
    Policy(fair_share=True, quotas=True, backfill=True),
    Policy(preemption=True),
    Policy.full(),
    replace(Policy.full(), tenant="team", preemption_attempts=2),
]
QUEUES = (
    QueueConfig("A", weight=2, guaranteed=4, cohort="all"),
    QueueConfig("B", weight=1, guaranteed=2, cohort="all"),
)
HISTORIES = [{}, {"A": 50.0}, {"B/x": 20.0, "C": 200.0}]


@st.composite
def a_job(draw: st.DrawFn, cpu: bool = True) -> JobRequest:
    """Few ids (so a put often replaces a job), ties in priority and submission order, jobs
    with nothing pending and (``cpu``) with CPU-only slices, policy filters."""
    i = draw(st.integers(0, 24))
    allowed = draw(st.sampled_from([None, frozenset({ClusterName("c0")})]))
    return JobRequest(
        id=JobId(f"j{i}"), name=f"j{i}", priority=draw(st.integers(0, 4)),
        seq=draw(st.integers(0, 12)),
        gpus_per_slice=draw(st.sampled_from([0, 1, 1, 2, 4, 8] if cpu else [1, 1, 1, 2, 4])),
        gpu_types=draw(st.sampled_from([None, frozenset({"H100"}), frozenset({"A100"})])),
        pending=tuple(SliceIndex(k) for k in range(draw(st.sampled_from([0, 1, 1, 2, 3])))),
        gang=draw(st.booleans()), queue=draw(st.sampled_from(["A", "B", "C"])),
        labels=draw(st.sampled_from([{}, {"team": "x"}, {"team": "y"}])),
        allowed_clusters=allowed,
        # The policy engine words a denial the same way for the same allowed clusters.
        denied_reasons={} if allowed is None else {ClusterName("c1"): "region"},
        max_runtime=draw(st.sampled_from([None, 30.0, 300.0])),
        expected_runtime=draw(st.sampled_from([None, None, 10.0])),
    )


def changes(cpu: bool = True) -> st.SearchStrategy[list[JobRequest | JobId]]:
    return st.lists(
        st.one_of(a_job(cpu), st.integers(0, 24).map(lambda i: JobId(f"j{i}"))), max_size=60
    )


@st.composite
def crowded_fleet(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    """Nodes mostly full of running jobs of several priorities and queues, so that a pass
    soon runs out of GPUs and goes on offering only what may preempt."""
    shape = {f"c{c}": draw(st.lists(st.sampled_from([2, 4, 8]), min_size=1, max_size=3))
             for c in range(draw(st.integers(1, 2)))}
    busy: list[RunningJob] = []
    for c, nodes in shape.items():
        for ni, size in enumerate(nodes):
            left = size - draw(st.sampled_from([0, 0, 0, 1, 2]))
            while left > 0:
                g = draw(st.integers(1, left))
                left -= g
                busy.append(running(
                    f"r{len(busy)}", on=[(c, f"n{ni}", g)], priority=draw(st.integers(0, 3)),
                    queue=draw(st.sampled_from(["A", "B"])),
                    checkpoint=float(draw(st.integers(0, 100))),
                    max_runtime=float(draw(st.integers(1, 300))),
                ))
    return shape, busy


def apply(wl: WaitList, ops: list[JobRequest | JobId]) -> None:
    for op in ops:
        if isinstance(op, JobRequest):
            wl.put(op)
        else:
            wl.drop(op)


@SETTINGS
@given(changes(), st.sampled_from(POLICIES), st.sampled_from(HISTORIES),
       st.sampled_from(HISTORIES))
def test_kept_order_is_the_order_a_pass_sorts(ops, policy, history, later) -> None:  # type: ignore[no-untyped-def]
    wl = WaitList(policy, history)
    apply(wl, ops[: len(ops) // 2])
    wl.rebase(policy, later)  # learned runtimes changed: sorted again
    wl.view()  # what it copies for one pass must follow the changes after it
    apply(wl, ops[len(ops) // 2 :])
    jobs = wl.jobs()
    view = wl.view()
    assert view.size == len(jobs) == len({j.id for j in jobs})
    if policy.fair_share and not policy.fifo:
        want = Offer._by_tenant(jobs, policy, later)
    else:
        flat = list(jobs)
        _sort(flat, policy, later)
        want = {"": flat} if flat else {}
    assert {t: list(g) for t, g in view.groups.items()} == want
    # The bookkeeping kept by changes is what a fresh list of the same jobs holds.
    fresh = WaitList(policy, later, jobs).view()
    assert view.groups == fresh.groups
    assert view.cpu == fresh.cpu == {j.id for j in jobs if j.pending and not j.gpus_per_slice}
    assert {k: ids for k, (_, ids) in view.shapes.items()} == {
        k: ids for k, (_, ids) in fresh.shapes.items()}
    assert {k: js for k, (_, js) in view.kinds.items()} == {
        k: js for k, (_, js) in fresh.kinds.items()}
    assert view.single_type == {t: g for t, g in single_type_gpus(jobs).items() if g}
    assert view.reading == sum(1 for j in jobs if j.datasets or j.checkpoint_cluster) == 0
    alike: dict[object, set[str]] = {}
    for j in jobs:
        if j.pending and j.gpus_per_slice:
            alike.setdefault(alike_key(j), set()).add(j.id)
    assert view.alike == fresh.alike == alike


PREEMPTING = [
    Policy(preemption=True),
    Policy(preemption=True, fair_share=True, quotas=True),
    Policy.full(),
    replace(Policy.full(), preempt_for_gain=False, preemption_attempts=3),
    replace(Policy.full(), tenant="team", preempt_for_gain=False),
]


@SETTINGS
@given(crowded_fleet(), st.booleans(), st.data(),
       st.sampled_from(POLICIES + PREEMPTING), st.sampled_from(HISTORIES))
def test_a_pass_with_the_kept_order_plans_the_same(fl, cpu, data, policy, history) -> None:  # type: ignore[no-untyped-def]
    """Jobs without CPU-only slices half the time: with them the pass walks every job."""
    first, then = data.draw(changes(cpu)), data.draw(changes(cpu))
    shape, busy = fl
    clusters, run_ = fleet(shape, busy)
    # The second cluster, if any, of another type: type-aware placement has a choice.
    clusters = tuple(
        c if c.name == "c0" else replace(
            c, nodes=tuple(replace(nd, gpu_type="A100") for nd in c.nodes))
        for c in clusters
    )
    wl = WaitList(policy, history)
    for ops in (first, then):  # two passes, the list kept from one to the next
        apply(wl, ops)
        snap = Snapshot(clusters, wl.jobs(), run_, QUEUES, policy, runtime_history=history)
        kept = replace(snap, order=wl.view())
        apply(wl, then[:3])  # changes after the view was taken do not reach it
        assert plan(kept, 100.0) == plan(snap, 100.0)
    # A view made for another policy is ignored, not misread.
    other = replace(snap, order=WaitList(Policy(fifo=True), None, snap.jobs).view())
    assert plan(other, 100.0) == plan(snap, 100.0)


def test_the_kept_tail_offers_each_kind_that_may_preempt_in_order() -> None:
    """A full fleet: ``d`` preempts first (it comes first), then ``c`` from the heap of
    kinds; ``a`` and ``b`` (priority 0, nothing lower runs) only get reasons."""
    from tests.hub.test_scheduler_helpers import job

    clusters, run_ = fleet({"c0": [4, 4]}, [
        running("r0", on=[("c0", "n0", 4)], priority=0),
        running("r1", on=[("c0", "n1", 4)], priority=1),
    ])
    js = [job("a", gpus=2), job("b", gpus=4), job("c", priority=2, gpus=4),
          job("d", priority=3, gpus=2, slices=2)]
    policy = Policy(preemption=True)
    wl = WaitList(policy, None, js)
    snap = Snapshot(clusters, wl.jobs(), run_, (), policy)
    p = plan(replace(snap, order=wl.view()), 100.0)
    assert [(x.victim, x.for_job) for x in p.preemptions] == [("r0", "d"), ("r1", "c")]
    assert set(p.waiting) == {"a", "b", "c", "d"}
    assert p == plan(snap, 100.0)


def test_type_ranking_reads_the_kept_counts() -> None:
    """Type-aware: the flexible job goes to the A100s, since H100-only jobs wait; the GPUs
    single-type jobs want come from the kept list, and give the same plan."""
    from tests.hub.test_scheduler_helpers import job

    (h100,), _ = fleet({"h": [8]})
    (a100,), _ = fleet({"a": [8]}, gpu_type="A100")
    js = [job("flex", gpus=4)] + [job(f"h{i}", gpus=8, gpu_type="H100") for i in range(3)]
    policy = Policy(type_aware=True)
    wl = WaitList(policy, None, js)
    snap = Snapshot((h100, a100), wl.jobs(), (), (), policy)
    p = plan(replace(snap, order=wl.view()), 0.0)
    assert {(x.job, x.cluster) for x in p.placements} == {("flex", "a"), ("h0", "h")}
    assert p == plan(snap, 0.0)
