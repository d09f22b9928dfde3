"""Which attempts ``orrery logs`` shows, in which order, and how errors read in a stream
(pure parts of ``orrery_hub.joblogs``; the NATS part is in test_logs_api.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from orrery.errors import Conflict, InvalidInput, NotFound, Unavailable
from orrery.resources import AttemptView, JobPublic, JobStatus
from orrery_hub.runtime.joblogs import LogQuery, plan, stream


def job(phase: str = "Running", slices: int = 2) -> JobPublic:
    return JobPublic(id="j-1", metadata={}, spec={"slices": slices},
                     status=JobStatus(phase=phase, reason="needs 2 H100", created_at=0.0))


def attempt(index: int, epoch: int, cluster: str = "eu", phase: str = "Running",
            id: int = 0) -> AttemptView:
    return AttemptView(id=id, index=index, epoch=epoch, cluster=cluster, node="n", gpus=[],
                       phase=phase, assigned_at=0.0)


# After a failover: epoch 1 on eu (Lost), epoch 2 on us; rows in the order they were made.
ROWS = [attempt(1, 1, phase="Lost", id=1), attempt(0, 1, phase="Lost", id=2),
        attempt(0, 2, "us", id=3), attempt(1, 2, "us", id=4)]


def test_every_epoch_in_order_then_slices() -> None:
    got = [(a.epoch, a.index) for a in plan(job(), ROWS, LogQuery())]
    assert got == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert [(a.epoch, a.index) for a in plan(job(), ROWS, LogQuery(slice=1))] == [(1, 1), (2, 1)]
    assert [a.cluster for a in plan(job(), ROWS, LogQuery(epoch=2))] == ["us", "us"]


def test_what_cannot_be_shown_says_why() -> None:
    with pytest.raises(InvalidInput, match=r"slice: job j-1 has 2 slice\(s\)"):
        plan(job(), ROWS, LogQuery(slice=2))
    with pytest.raises(NotFound, match="no epoch 3 for slice 0; its epochs: 1, 2"):
        plan(job(), ROWS, LogQuery(slice=0, epoch=3))
    with pytest.raises(Conflict, match=r"no slice has been placed; it is Pending \(needs 2 H100"):
        plan(job("Pending"), [], LogQuery())


def source(chunks: dict[int, list[bytes | Exception]]):  # type: ignore[no-untyped-def]
    def one(a: AttemptView) -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            for c in chunks[a.epoch]:
                if isinstance(c, Exception):
                    raise c
                yield c

        return gen()

    return one


async def collect(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


async def test_errors_in_a_stream_take_the_place_of_the_output() -> None:
    rows = [attempt(0, 1, phase="Lost"), attempt(0, 2, "us")]
    lost = Unavailable("cluster eu did not answer; it is Lost")
    out = await collect(stream(rows, source({1: [b"half a line", lost], 2: [b"ok\n"]})))
    assert out == (b"==> slice 0 \xc2\xb7 epoch 1 \xc2\xb7 eu \xc2\xb7 Lost <==\nhalf a line\n"
                   b"[orrery] cluster eu did not answer; it is Lost\n"
                   b"==> slice 0 \xc2\xb7 epoch 2 \xc2\xb7 us \xc2\xb7 Running <==\nok\n")
    # One attempt: an error before any output is raised (the HTTP status); after, a line.
    with pytest.raises(Unavailable):
        await collect(stream(rows[:1], source({1: [lost]})))
    out = await collect(stream(rows[:1], source({1: [b"step 1\n", lost]})))
    assert out == b"step 1\n[orrery] cluster eu did not answer; it is Lost\n"
