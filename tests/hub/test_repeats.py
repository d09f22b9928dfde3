"""A heartbeat that only repeats its cluster's last one is not decoded again; anything that
differs, even by one free GPU, is."""

from __future__ import annotations

from orrery.wire import Heartbeat, NodeReport, encode
from orrery_hub.runtime.repeats import Repeats


def beat(seq: int, free: list[int], cluster: str = "c1") -> Heartbeat:
    return Heartbeat(
        sender=cluster,
        seq=seq,
        cluster=cluster,
        incarnation="i",
        lease_s=10.0,
        nodes=[NodeReport(name="n0", gpu_type="H100", gpus=8, free=free)],
    )


def test_a_repeat_is_the_last_heartbeat_with_its_own_seq() -> None:
    r = Repeats()
    first = beat(1, [0, 1])
    assert r.lookup("c1", encode(first)) is None  # nothing remembered yet
    r.remember("c1", encode(first), first)
    again = r.lookup("c1", encode(beat(2, [0, 1])))
    assert again == beat(2, [0, 1])


def test_anything_else_is_decoded_in_full() -> None:
    r = Repeats()
    first = beat(1, [0, 1])
    r.remember("c1", encode(first), first)
    assert r.lookup("c1", encode(beat(2, [0]))) is None  # capacity changed
    assert r.lookup("c2", encode(beat(2, [0, 1], cluster="c2"))) is None  # another cluster
    moved = encode(first).replace(b'"seq":1', b'"seq":1 ', 1)  # same bytes, seq elsewhere
    assert r.lookup("c1", moved) is None
    huge = encode(first).replace(b'"seq":1', b'"seq":9999999999999999999', 1)
    assert r.lookup("c1", huge) is None  # past int64: the decoder refuses it, not us
