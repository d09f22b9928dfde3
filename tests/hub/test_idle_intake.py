"""Idle heartbeats take the short way (issue 11): a repeat is answered on the report
callback, its 100 nodes neither compared nor folded into the inventory again, and its row's
refresh only moves ``last_heartbeat``. Each short cut must still notice what changed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from sqlmodel import Session, select

from orrery.wire import Heartbeat, HeartbeatAck, NodeReport, Subjects, decode, encode
from orrery_hub.main import Hub
from orrery_hub.runtime.intake import _ack
from orrery_hub.runtime.inventory import Inventory, NodeTypes, Seen
from orrery_hub.runtime.rows import Rows, write_rows
from orrery_hub.scheduler import ClusterCapacity
from orrery_hub.store import Database
from orrery_hub.store.models import ClusterRow, EventRow


def beat(seq: int, free: list[int], cluster: str = "c1", ready: bool = True) -> Heartbeat:
    return Heartbeat(
        sender=cluster,
        seq=seq,
        cluster=cluster,
        incarnation="i",
        lease_s=0.5,  # within the test hub's failover timeout
        nodes=[
            NodeReport(name="n0", gpu_type="H100", gpus=8, free=free),
            NodeReport(name="n1", gpu_type="H100", gpus=8, free=[0], ready=ready),
        ],
    )


def test_the_preencoded_ack_is_what_encode_writes() -> None:
    for seq in (0, 7, 1_733_000_000_000_000, 2**63 - 1):
        assert _ack(seq) == encode(HeartbeatAck(sender="hub", seq=seq))


def test_a_repeat_of_the_same_node_list_changes_nothing_but_the_time() -> None:
    inv = Inventory()
    first = beat(1, [0, 1])
    inv.observe(first, 100.0)
    again = first.model_copy(update={"seq": 2})  # a repeat shares the node list
    assert again.nodes is first.nodes
    v, came_back = inv.observe(again, 101.0)
    assert not came_back and v.last_seen == 101.0 and v.nodes == first.nodes
    assert v.node_gone_since == {}


def test_a_not_ready_node_is_still_reported_lost_again_through_repeats() -> None:
    """A node not ready is counted gone, reported lost once after the timeout, then counted
    again from the next heartbeat: the same list, repeated, must not skip that."""
    inv = Inventory()
    first = beat(1, [0], ready=False)
    inv.observe(first, 100.0)
    inv.observe(first.model_copy(update={"seq": 2}), 101.0)
    assert inv.clusters["c1"].node_gone_since == {"n1": 101.0}
    assert inv.nodes_lost(200.0, timeout=15) == {"c1": {"n1"}}
    inv.observe(first.model_copy(update={"seq": 3}), 201.0)
    assert inv.clusters["c1"].node_gone_since == {"n1": 201.0}


def test_a_changed_node_list_is_folded_in() -> None:
    inv = Inventory()
    first = beat(1, [0, 1])
    inv.observe(first, 100.0)
    inv.observe(first.model_copy(update={"seq": 2}), 101.0)
    changed = beat(3, [0], ready=False)
    v, _ = inv.observe(changed, 102.0)
    assert [n.free for n in v.nodes] == [[0], [0]]
    assert v.node_gone_since == {"n1": 102.0}


def test_rows_whose_content_stands_are_touched_and_the_rest_written_in_full() -> None:
    rows = Rows()
    first = beat(1, [0, 1])
    rows.add(first, 1.0, joined=True)
    full, touch = rows.take()
    assert [(hb.cluster, joined) for hb, _, joined in full] == [("c1", True)] and touch == []
    rows.committed(first)
    rows.add(first.model_copy(update={"seq": 2}), 2.0, joined=False)
    assert rows.take() == ([], [("c1", 2.0)])
    relabelled = first.model_copy(update={"seq": 3, "labels": {"region": "eu"}})
    rows.add(relabelled, 3.0, joined=False)
    assert rows.take()[0] == [(relabelled, 3.0, False)]
    other = beat(4, [0, 1])  # equal content, decoded anew: written in full, to be sure
    rows.add(other, 4.0, joined=False)
    assert rows.take()[0] == [(other, 4.0, False)]


async def until(pred: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_repeats_then_a_change_reach_the_inventory_and_the_row(hub: Hub) -> None:
    assert hub.endpoints is not None
    nc = await nats.connect(hub.endpoints.nats_url)
    subject = Subjects("c1").heartbeat

    async def send(hb: Heartbeat) -> HeartbeatAck:
        reply = await nc.request(subject, encode(hb), timeout=10)
        return decode(reply.data, HeartbeatAck)

    try:
        for seq in range(1, 4):  # joins, then repeats (answered on the callback)
            ack = await send(beat(seq, [0, 1]))
            assert ack.accepted and ack.forget == []
        assert hub.inventory.clusters["c1"].state == "Ready"

        def row() -> ClusterRow | None:
            with Session(hub.store.db.engine) as s:
                return s.get(ClusterRow, "c1")

        await until(lambda: row() is not None, "the joined cluster's row")
        with Session(hub.store.db.engine) as s:
            joined = s.exec(select(EventRow).where(EventRow.kind == "ClusterJoined")).all()
        assert [e.cluster for e in joined] == ["c1"]

        await send(beat(4, [1], ready=False))  # one GPU taken, a node not ready
        v = hub.inventory.clusters["c1"]
        assert [n.free for n in v.nodes] == [[1], [0]] and "n1" in v.node_gone_since

        def row_free() -> list[object]:
            r = row()
            return [n["free"] for n in r.nodes] if r is not None else []

        await until(lambda: row_free() == [[1], [0]], "the changed capacity in the row")
    finally:
        await nc.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    pg: str = request.getfixturevalue("pg_url")
    return pg


def test_rows_are_inserted_updated_and_touched_in_bulk(url: str) -> None:
    db = Database.connect(url)
    first = beat(1, [0, 1])
    with db.session() as s:
        write_rows(s, [(first, 1.0, True)], [])
        s.commit()
    with db.session() as s:
        write_rows(s, [(beat(2, [1], cluster="c2"), 2.0, True)], [("c1", 2.0)])
        s.commit()
    with db.session() as s:
        write_rows(s, [(beat(3, [0]), 3.0, False)], [("c2", 3.0)])
        s.commit()
    with db.session() as s:
        write_rows(s, [], [("c1", 4.0)])  # touches only: nothing else is read or written
        s.commit()
    with db.session() as s:
        rows = {r.name: r for r in s.exec(select(ClusterRow))}
        events = [
            e.cluster for e in s.exec(select(EventRow).where(EventRow.kind == "ClusterJoined"))
        ]
    assert sorted(events) == ["c1", "c2"]
    c1, c2 = rows["c1"], rows["c2"]
    assert (c1.first_seen, c1.last_heartbeat) == (1.0, 4.0)
    assert [n["free"] for n in c1.nodes] == [[0], [0]]  # written in full
    assert (c2.first_seen, c2.last_heartbeat, c2.state) == (2.0, 3.0, "Ready")
    assert [n["free"] for n in c2.nodes] == [[1], [0]]  # touched: content as it was
    db.close()


async def test_cluster_facts_are_made_again_only_when_a_cluster_changed(hub: Hub) -> None:
    first = beat(1, [0, 1])
    hub.inventory.observe(first, 100.0)
    facts = hub._facts()
    assert [f.name for f in facts] == ["c1"] and facts[0].gpu_types == frozenset({"H100"})
    hub.inventory.observe(first.model_copy(update={"seq": 2}), 101.0)  # a repeat
    assert hub._facts() is facts
    hub.inventory.observe(first.model_copy(update={"seq": 3, "labels": {"region": "eu"}}), 102.0)
    relabelled = hub._facts()
    assert relabelled is not facts and relabelled[0].labels == {"region": "eu"}
    changed = beat(4, [0]).model_copy(update={"labels": {"region": "eu"}})
    changed.nodes[0] = changed.nodes[0].model_copy(update={"gpu_type": "A100"})
    hub.inventory.observe(changed, 103.0)
    assert hub._facts()[0].gpu_types == frozenset({"A100", "H100"})
    hub.inventory.newly_lost(200.0, timeout=15)
    assert hub._facts() == ()


def test_node_types_answer_as_the_full_index_would() -> None:
    first, other = beat(1, [0]), beat(1, [1], cluster="c2")
    other.nodes[1] = other.nodes[1].model_copy(update={"gpu_type": None})
    types = NodeTypes({"c1": first.nodes, "c2": other.nodes})
    full = {(c, n.name): n.gpu_type for c, hb in (("c1", first), ("c2", other)) for n in hb.nodes}
    assert dict(types) == full and len(types) == 4
    assert types.get(("c2", "n1"), "absent") is None  # known, no GPU type
    assert types.get(("c2", "n9")) is None and types.get(("c9", "n0")) is None


def test_capacity_made_again_only_where_something_changed_or_is_held() -> None:
    inv = Inventory()
    inv.observe(beat(1, [0, 1]), 100.0)
    inv.observe(beat(1, [2, 3], cluster="c2"), 100.0)
    memo: dict[str, tuple[Seen, ClusterCapacity]] = {}
    first = inv.capacity({}, memo)
    assert first == inv.capacity({})  # the memo changes nothing of the answer
    again = inv.capacity({}, memo)
    assert again[0] is first[0] and again[1] is first[1]
    held = inv.capacity({("c2", "n0"): {2}}, memo)
    assert held[0] is first[0] and held[1].nodes[0].free == (3,)
    assert inv.capacity({}, memo)[1].nodes[0].free == (2, 3)  # released: made again
    inv.observe(beat(2, [1]), 101.0)  # c1 changed
    changed = inv.capacity({}, memo)
    assert changed[0].nodes[0].free == (1,) and changed == inv.capacity({})
    del inv.clusters["c2"]
    inv.capacity({}, memo)
    assert set(memo) == {"c1"}


def test_a_cluster_that_holds_gpus_is_made_again_only_when_what_it_holds_changes() -> None:
    inv = Inventory()
    inv.observe(beat(1, [0, 1]), 100.0)
    inv.observe(beat(1, [2, 3], cluster="c2"), 100.0)
    memo: dict[str, tuple[Seen, ClusterCapacity]] = {}
    first = inv.capacity({("c2", "n0"): {2}}, memo)
    again = inv.capacity({("c2", "n0"): {2}}, memo)  # the same GPUs held: kept
    assert again[1] is first[1] and again[1].nodes[0].free == (3,)
    more = inv.capacity({("c2", "n0"): {2, 3}}, memo)  # another slice placed there
    assert more[0] is first[0] and more[1].nodes[0].free == ()
    assert more == inv.capacity({("c2", "n0"): {2, 3}})  # as made without the memo
    assert inv.capacity({("c2", "n0"): set()}, memo)[1].nodes[0].free == (2, 3)


def test_the_inventory_version_moves_with_what_cluster_facts_are_made_of() -> None:
    inv = Inventory()
    first = beat(1, [0, 1])
    inv.observe(first, 100.0)
    v = inv.version
    inv.observe(first.model_copy(update={"seq": 2}), 101.0)  # a repeat: nothing moved
    assert inv.version == v
    inv.observe(beat(3, [0]), 102.0)  # its node list changed
    assert inv.version > v
    v = inv.version
    inv.observe(beat(4, [0]).model_copy(update={"labels": {"region": "eu"}}), 103.0)
    assert inv.version > v
    v = inv.version
    assert inv.newly_lost(200.0, timeout=15) == ["c1"]
    assert inv.version > v
    v = inv.version
    inv.observe(beat(5, [0]).model_copy(update={"labels": {"region": "eu"}}), 201.0)
    assert inv.version > v  # back from Lost, with the same labels
    v = inv.version
    inv.replace(list(inv.clusters.values()))
    assert inv.version > v


async def test_touches_due_while_the_rows_lane_is_held_share_one_commit(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orrery_hub.runtime import intake
    from orrery_hub.runtime.rows import ROWS_LANE

    monkeypatch.setattr(intake, "TOUCH_EVERY_S", 0.3)
    beats = [beat(1, [0], cluster=f"c{i}") for i in range(5)]
    for hb in beats:  # rows written in full once: later refreshes only touch
        hub.rows.add(hb, 1.0, joined=False)
    await hub.lanes.submit(ROWS_LANE, hub._write_rows, coalesce=True)
    commits: list[int] = []
    tx = hub.store.tx

    async def counted(fn: Callable[[Session], object]) -> object:
        if getattr(fn, "func", None) is write_rows:  # the hub's own loop commits too
            commits.append(1)
        return await tx(fn)

    monkeypatch.setattr(hub.store, "tx", counted)
    t0 = time.monotonic()
    hub.rows.add(beats[0].model_copy(update={"seq": 2}), 2.0, joined=False)
    first = hub.lanes.submit(ROWS_LANE, hub._write_rows, coalesce=True)
    await asyncio.sleep(0.05)  # the first touch is written; the lane is held
    for hb in beats[1:]:
        hub.rows.add(hb.model_copy(update={"seq": 2}), 2.1, joined=False)
    second = hub.lanes.submit(ROWS_LANE, hub._write_rows, coalesce=True)
    await first
    await second
    assert len(commits) == 2  # one for the first touch, one for the four after it
    assert time.monotonic() - t0 >= 0.3  # the second waited for the lane
    with Session(hub.store.db.engine) as s:
        rows = {r.name: r.last_heartbeat for r in s.exec(select(ClusterRow))}
    assert rows == {"c0": 2.0, "c1": 2.1, "c2": 2.1, "c3": 2.1, "c4": 2.1}
