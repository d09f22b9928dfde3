"""The first loop's scheduler guarantees, as properties over random fleets and queues, plus
packing examples spelled out. (Fair share, preemption and backfill have their own tests.)"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from orrery.ids import ClusterName, JobId, NodeName, SliceIndex
from orrery_hub.scheduler import ClusterCapacity, JobRequest, NodeCapacity, Snapshot, plan

TYPES = ["H100", "A100", "L4"]


def node(name: str, gpu_type: str = "H100", gpus: int = 8, free: int | None = None) -> NodeCapacity:
    f = gpus if free is None else free
    return NodeCapacity(NodeName(name), gpu_type, gpus, tuple(range(gpus - f, gpus)))


def cluster(name: str, *nodes: NodeCapacity, ready: bool = True) -> ClusterCapacity:
    return ClusterCapacity(ClusterName(name), {"region": name}, ready, tuple(nodes))


def job(
    jid: str,
    slices: int,
    gpus: int,
    *,
    types: list[str] | None = None,
    prio: int = 0,
    seq: int = 0,
    gang: bool = True,
) -> JobRequest:
    return JobRequest(
        id=JobId(jid),
        name=jid,
        priority=prio,
        seq=seq,
        gpus_per_slice=gpus,
        gpu_types=frozenset(types) if types else None,
        pending=tuple(SliceIndex(i) for i in range(slices)),
        gang=gang,
    )


# ---- examples -------------------------------------------------------------------------


def test_a_job_that_fits_one_cluster_stays_in_one_cluster() -> None:
    snap = Snapshot(
        clusters=(cluster("a", node("a0"), node("a1")), cluster("b", node("b0"), node("b1"))),
        jobs=(job("j", 2, 8),),
    )
    p = plan(snap, now=0)
    assert {x.cluster for x in p.placements} == {"a"}
    assert len(p.placements) == 2


def test_best_fit_keeps_whole_nodes_free_for_large_jobs() -> None:
    # a0 has 2 free, a1 is whole: a 2-GPU slice must go on a0, so an 8-GPU job still fits.
    snap = Snapshot(
        clusters=(cluster("a", node("a0", free=2), node("a1")),),
        jobs=(job("small", 1, 2, seq=1), job("big", 1, 8, seq=2)),
    )
    p = plan(snap, now=0)
    where = {x.job: x.node for x in p.placements}
    assert where == {"small": "a0", "big": "a1"}


def test_the_tightest_cluster_is_chosen_when_several_fit() -> None:
    snap = Snapshot(
        clusters=(cluster("roomy", node("r0"), node("r1")), cluster("tight", node("t0", free=4))),
        jobs=(job("j", 1, 4),),
    )
    assert plan(snap, now=0).placements[0].cluster == "tight"


def test_a_gang_spans_clusters_only_when_no_single_cluster_fits() -> None:
    snap = Snapshot(
        clusters=(cluster("a", node("a0")), cluster("b", node("b0"))),
        jobs=(job("j", 2, 8),),
    )
    p = plan(snap, now=0)
    assert sorted(x.cluster for x in p.placements) == ["a", "b"]


def test_a_gang_that_does_not_fit_gets_nothing_and_a_reason() -> None:
    snap = Snapshot(
        clusters=(cluster("eu-west", node("e0"), node("e1", free=0)),),
        jobs=(job("j", 4, 8, types=["H100"]),),
    )
    p = plan(snap, now=0)
    assert p.placements == ()
    w = p.waiting[JobId("j")]
    assert w.summary == "needs 4 slices × 8 H100; largest fit: eu-west 1 slice(s)"
    assert w.clusters[ClusterName("eu-west")] == "1 of 4 slices fit (8 of 16 H100 free)"


def test_independent_slices_take_what_fits() -> None:
    snap = Snapshot(clusters=(cluster("a", node("a0")),), jobs=(job("j", 3, 4, gang=False),))
    p = plan(snap, now=0)
    assert len(p.placements) == 2
    assert "needs 1 slice" in p.waiting[JobId("j")].summary


def test_gpu_types_are_respected_and_explained() -> None:
    snap = Snapshot(
        clusters=(cluster("a", node("a0", "A100")),), jobs=(job("j", 1, 1, types=["H100"]),)
    )
    p = plan(snap, now=0)
    assert p.placements == ()
    assert p.waiting[JobId("j")].clusters[ClusterName("a")] == "no H100 GPUs"


def test_lost_clusters_are_never_used() -> None:
    snap = Snapshot(clusters=(cluster("a", node("a0"), ready=False),), jobs=(job("j", 1, 1),))
    p = plan(snap, now=0)
    assert p.placements == ()
    assert p.waiting[JobId("j")].clusters[ClusterName("a")] == "cluster Lost"


def test_higher_priority_first_then_submission_order() -> None:
    snap = Snapshot(
        clusters=(cluster("a", node("a0")),),
        jobs=(
            job("late-low", 1, 8, seq=1),
            job("early-high", 1, 8, prio=10, seq=2),
            job("late-high", 1, 8, prio=10, seq=3),
        ),
    )
    assert [x.job for x in plan(snap, now=0).placements] == ["early-high"]


def test_policy_filters_and_scores_are_honoured() -> None:
    base = job("j", 1, 8)
    restricted = replace(
        base,
        allowed_clusters=frozenset({ClusterName("b")}),
        denied_reasons={ClusterName("a"): "forbidden by placement/x"},
    )
    snap = Snapshot(
        clusters=(cluster("a", node("a0")), cluster("b", node("b0"))), jobs=(restricted,)
    )
    assert plan(snap, now=0).placements[0].cluster == "b"
    preferring = replace(base, cluster_scores={ClusterName("b"): 5.0})
    snap = Snapshot(
        clusters=(cluster("a", node("a0")), cluster("b", node("b0"))), jobs=(preferring,)
    )
    assert plan(snap, now=0).placements[0].cluster == "b"


# ---- properties -----------------------------------------------------------------------

nodes_st = st.lists(
    st.tuples(st.sampled_from(TYPES), st.sampled_from([1, 2, 4, 8]), st.integers(0, 8)),
    min_size=1,
    max_size=4,
)
clusters_st = st.lists(st.tuples(nodes_st, st.booleans()), min_size=1, max_size=4)
jobs_st = st.lists(
    st.tuples(
        st.integers(1, 4),
        st.sampled_from([0, 1, 2, 4, 8]),
        st.none() | st.lists(st.sampled_from(TYPES), min_size=1, max_size=2),
        st.integers(0, 3),
        st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


def build(cl: list, jl: list) -> Snapshot:
    clusters = []
    for ci, (nodes, ready) in enumerate(cl):
        ns = [
            NodeCapacity(NodeName(f"c{ci}n{ni}"), t, g, tuple(range(g - min(f, g), g)))
            for ni, (t, g, f) in enumerate(nodes)
        ]
        clusters.append(ClusterCapacity(ClusterName(f"c{ci}"), {}, ready or ci == 0, tuple(ns)))
    jobs = [
        job(f"j{i}", n, g, types=t, prio=p, seq=i, gang=gang)
        for i, (n, g, t, p, gang) in enumerate(jl)
    ]
    return Snapshot(tuple(clusters), tuple(jobs))


@settings(max_examples=300, deadline=None)
@given(clusters_st, jobs_st)
def test_invariants(cl: list, jl: list) -> None:
    snap = build(cl, jl)
    p = plan(snap, now=0)
    nodes = {(c.name, n.name): (c, n) for c in snap.clusters for n in c.nodes}
    jobs = {j.id: j for j in snap.jobs}
    used: Counter[tuple[str, str, int]] = Counter()
    per_job: Counter[str] = Counter()
    for x in p.placements:
        c, n = nodes[(x.cluster, x.node)]
        j = jobs[x.job]
        assert c.ready, "placed on a Lost cluster"
        assert len(x.gpus) == j.gpus_per_slice
        if j.gpus_per_slice:
            assert j.gpu_types is None or n.gpu_type in j.gpu_types, "wrong GPU type"
        for g in x.gpus:
            assert g in n.free, "assigned a GPU that was not free"
            used[(x.cluster, x.node, g)] += 1
        per_job[x.job] += 1
    assert all(v == 1 for v in used.values()), "a GPU assigned twice"
    for jid, j in jobs.items():
        placed = per_job[jid]
        if j.gang:
            assert placed in (0, len(j.pending)), "gang partially placed"
        if placed < len(j.pending):
            assert jid in p.waiting, "an unplaced job has no reason"
    # Priority order: a job left waiting never sees a lower-ranked job of the same shape placed.
    for jid in p.waiting:
        j = jobs[jid]
        for x in p.placements:
            k = jobs[x.job]
            same_shape = (k.gpus_per_slice, k.gpu_types, len(k.pending), k.gang) == (
                j.gpus_per_slice,
                j.gpu_types,
                len(j.pending),
                j.gang,
            )
            if same_shape and per_job[jid] == 0:
                assert (-k.priority, k.seq) < (-j.priority, j.seq), "priority order broken"


@settings(max_examples=100, deadline=None)
@given(clusters_st, jobs_st)
def test_plan_is_deterministic(cl: list, jl: list) -> None:
    snap = build(cl, jl)
    assert plan(snap, now=0) == plan(snap, now=0)


def test_a_job_placed_moments_ago_is_not_preempted_again() -> None:
    from orrery_hub.scheduler import Policy, RunningJob, RunningSlice

    low = RunningJob(
        id=JobId("low"),
        queue="default",
        priority=0,
        started_at=100.0,
        slices=(RunningSlice(SliceIndex(0), ClusterName("a"), NodeName("a0"), tuple(range(8))),),
    )
    snap = Snapshot(
        clusters=(cluster("a", node("a0", free=0)),),
        jobs=(job("high", 1, 8, prio=100),),
        running=(low,),
        policy=Policy(preemption=True, min_run_s=60.0),
    )
    # 10 s after it started: protected; 61 s after: fair game.
    assert plan(snap, now=110.0).preemptions == ()
    assert "high" in plan(snap, now=110.0).waiting
    victims = plan(snap, now=161.0).preemptions
    assert [(p.victim, p.for_job) for p in victims] == [("low", "high")]
