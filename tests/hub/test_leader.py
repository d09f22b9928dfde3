"""The leader lease: one hub leads at a time, a standby takes over once the lease expires,
and a deposed leader that wakes up cannot commit a write — on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from orrery.errors import NotLeader
from orrery_hub.leader import Elector
from orrery_hub.store import Database
from orrery_hub.store.leaderrows import LeaderRow
from orrery_hub.store.models import EventRow
from orrery_hub.store.runner import StoreRunner


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
        return
    from tests.conftest import scratch_pg

    with scratch_pg() as url:
        yield url


def _event(s: Session, what: str) -> None:
    s.add(EventRow(at=0.0, kind="Test", message=what))


def _events(db: Database) -> list[str]:
    with db.session() as s:
        return [e.message for e in s.exec(select(EventRow)).all()]


def _expire(db: Database) -> None:
    """The leader's lease runs out (as it does when it stops renewing)."""
    with db.session() as s:
        s.info["unfenced"] = True
        row = s.exec(select(LeaderRow)).one()
        row.expires_at = 0.0
        s.add(row)


async def test_one_leads_a_standby_takes_over_and_the_deposed_cannot_write(db_url: str) -> None:
    a_db, b_db = Database.connect(db_url), Database.connect(db_url)
    a_store, b_store = StoreRunner(a_db), StoreRunner(b_db)
    clock = Clock()
    a = Elector(a_store, address="http://a", ttl_s=30, monotonic=clock)
    b = Elector(b_store, address="http://b", ttl_s=30, monotonic=clock)
    a_db.fence, b_db.fence = a.fence, b.fence
    try:
        await a.claim_once()
        await b.claim_once()
        assert a.leading and a.epoch == 1
        assert not b.leading and b.leader_address == "http://a"

        await a_store.tx(lambda s: _event(s, "a1"))
        with pytest.raises(NotLeader, match="standby: writes go to the leader at http://a") as e:
            await b_store.tx(lambda s: _event(s, "b1"))
        assert e.value.leader == "http://a"
        # Reads are not fenced: a standby serves them.
        assert await b_store.tx(lambda s: len(s.exec(select(EventRow)).all())) == 1

        # a stops renewing (SIGSTOP, a partition): its lease runs out, b takes over.
        _expire(a_db)
        await b.claim_once()
        assert b.leading and b.epoch == 2
        await b_store.tx(lambda s: _event(s, "b2"))

        # a wakes up still believing it leads (its own clock has not run out): the database
        # refuses its write, and it rolls back.
        assert a.leading
        with pytest.raises(NotLeader, match=r"no longer the leader .*epoch 2, ours 1"):
            await a_store.tx(lambda s: _event(s, "a2"))
        assert sorted(_events(a_db)) == ["a1", "b2"]

        # Its next claim shows it the new holder: it steps down and names the leader.
        await a.claim_once()
        assert not a.leading and a.leader_address == "http://b"
    finally:
        a_store.close()
        b_store.close()


async def test_a_leader_whose_clock_ran_out_stops_writing_before_the_database_says(
    tmp_path: Path,
) -> None:
    db = Database.connect(f"sqlite:///{tmp_path / 'hub.db'}")
    store = StoreRunner(db)
    clock = Clock()
    e = Elector(store, address="http://a", ttl_s=3, monotonic=clock)
    db.fence = e.fence
    try:
        await e.claim_once()
        assert e.leading
        clock.t += 3.5  # no renewal for longer than the lease
        assert not e.leading
        with pytest.raises(NotLeader):
            await store.tx(lambda s: _event(s, "late"))
        await e.claim_once()  # renews (nobody took over): leads again, same epoch
        assert e.leading and e.epoch == 1
    finally:
        store.close()


async def test_a_clean_stop_hands_over_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    a_store, b_store = StoreRunner(Database.connect(url)), StoreRunner(Database.connect(url))
    clock = Clock()
    a = Elector(a_store, address="http://a", ttl_s=30, monotonic=clock)
    b = Elector(b_store, address="http://b", ttl_s=30, monotonic=clock)
    try:
        await a.claim_once()
        await a.resign()
        await b.claim_once()
        assert b.leading and b.epoch == 2
    finally:
        a_store.close()
        b_store.close()
