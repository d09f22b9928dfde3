"""Report lanes (``orrery_hub.runtime.lanes``): per cluster, in arrival order, only the newest
heartbeat waiting, one failure never stopping the next, lanes never waiting on each other."""

from __future__ import annotations

import asyncio

import pytest

from orrery_hub.runtime.lanes import Lanes


async def test_a_lane_runs_in_order_and_keeps_only_the_newest_coalescible_work() -> None:
    lanes: Lanes[str] = Lanes()
    gate = asyncio.Event()
    ran: list[str] = []

    def work(name: str, block: bool = False):  # type: ignore[no-untyped-def]
        async def run() -> str:
            if block:
                await gate.wait()
            ran.append(name)
            return name

        return run

    first = lanes.submit("c", work("status-1", block=True))
    hb1 = lanes.submit("c", work("heartbeat-1"), coalesce=True)
    st2 = lanes.submit("c", work("status-2"))
    hb2 = lanes.submit("c", work("heartbeat-2"), coalesce=True)
    other = lanes.submit("d", work("other-cluster"))
    assert await asyncio.wait_for(other, 1) == "other-cluster"  # d does not wait for c
    assert hb1.done() and hb1.result() is None  # superseded by the newer heartbeat
    assert lanes.waiting("c") == 2
    gate.set()
    assert await asyncio.wait_for(hb2, 1) == "heartbeat-2"
    assert (await first, await st2) == ("status-1", "status-2")
    assert ran == ["other-cluster", "status-1", "status-2", "heartbeat-2"]


async def test_a_failing_report_does_not_stop_the_next(caplog: pytest.LogCaptureFixture) -> None:
    lanes: Lanes[int] = Lanes()

    async def boom() -> int:
        raise OverflowError("too large")

    async def fine() -> int:
        return 7

    bad = lanes.submit("c", boom)
    good = lanes.submit("c", fine)
    assert await asyncio.wait_for(bad, 1) is None
    assert await asyncio.wait_for(good, 1) == 7
    assert "handling a report failed" in caplog.text


async def test_closing_resolves_what_still_waits() -> None:
    lanes: Lanes[int] = Lanes()
    never = asyncio.Event()

    async def stuck() -> int:
        await never.wait()
        return 1

    async def after() -> int:
        return 2

    lanes.submit("c", stuck)
    queued = lanes.submit("c", after)
    await asyncio.sleep(0)
    await lanes.close()
    assert queued.done() and queued.result() is None
