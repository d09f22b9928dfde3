"""The per-cluster node index is kept between passes for every cluster of a large fleet."""

from __future__ import annotations

from orrery.ids import ClusterName, NodeName
from orrery_hub.scheduler import ClusterCapacity, fit
from orrery_hub.scheduler.snapshot import NodeCapacity


def nodes(n: int) -> tuple[NodeCapacity, ...]:
    return tuple(
        NodeCapacity(name=NodeName(f"n{i}"), gpu_type="H100", gpus=8, free=tuple(range(8)))
        for i in range(n)
    )


def test_a_thousand_clusters_keep_their_indexes_from_pass_to_pass() -> None:
    fleet = [nodes(4) for _ in range(1000)]
    first = [fit._index(t) for t in fleet]  # pass 1 builds
    again = [fit._index(t) for t in fleet]  # pass 2 finds every one
    assert all(a is b for a, b in zip(first, again, strict=True))


def test_replaced_tuples_age_out_and_the_bound_holds() -> None:
    kept = nodes(2)
    fit._index(kept)
    for _ in range(fit._INDEX_MAX + 10):
        fit._index(nodes(1))  # each heartbeat of a changing cluster: a fresh tuple
        fit._index(kept)  # a steady cluster, used every pass
    assert len(fit._INDEX) <= fit._INDEX_MAX
    assert fit._index(kept) is fit._index(kept)
    assert id(kept) in fit._INDEX


def test_an_index_is_never_used_for_another_tuple() -> None:
    a = nodes(3)
    ia = fit._index(a)
    b = nodes(5)
    ib = fit._index(b)
    assert ia.nodes is a and ib.nodes is b
    assert ia is not ib


def buckets_of(caps: tuple[ClusterCapacity, ...]) -> dict[str, object]:
    """Each cluster's shared index, as plain lists (what a pass must not change)."""
    return {
        c.name: {
            t: {k: list(ns) for k, ns in by.items()}
            for t, by in fit._index(c.nodes).buckets.items()
        }
        for c in caps
    }


def test_a_pass_that_places_leaves_the_shared_index_as_it_was() -> None:
    from orrery_hub.scheduler import Policy, QueueConfig, Snapshot, plan
    from tests.hub.test_scheduler_helpers import job

    caps = tuple(
        ClusterCapacity(name=ClusterName(f"c{i}"), labels={}, ready=True, nodes=nodes(3))
        for i in range(4)
    )
    before = buckets_of(caps)
    snap = Snapshot(
        clusters=caps,
        jobs=tuple(job(f"j{i}", gpus=4, slices=2) for i in range(5)),
        running=(),
        queues=(QueueConfig("default"),),
        policy=Policy(),
    )
    first = plan(snap, 0.0)
    assert first.placements  # it did take GPUs
    assert buckets_of(caps) == before
    # The next pass over the very same capacity objects decides the same.
    assert plan(snap, 0.0).placements == first.placements
