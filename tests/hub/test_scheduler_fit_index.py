"""The per-cluster node index is kept between passes for every cluster of a large fleet."""

from __future__ import annotations

from orrery.ids import NodeName
from orrery_hub.scheduler import fit
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
