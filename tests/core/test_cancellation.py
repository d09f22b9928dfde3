"""A cancellation swallowed by ``asyncio.wait_for`` (Python 3.11) still stops a loop that
asks ``raise_if_cancelled`` each turn: the spoke's heartbeat loop and the hub's loops hung
their shutdown without it (nats.py's request() awaits its reply with wait_for)."""

from __future__ import annotations

import asyncio

from orrery.cancellation import raise_if_cancelled


async def _loop(
    futures: asyncio.Queue[asyncio.Future[int]],
    turns: list[int],
    check: bool,
    waiting: asyncio.Event,
) -> None:
    while True:
        if check:
            raise_if_cancelled()
        fut = await futures.get()
        waiting.set()  # in the same step as wait_for's first await, just below
        turns.append(await asyncio.wait_for(fut, 5))


async def _cancel_as_reply_arrives(check: bool) -> tuple[asyncio.Task[None], list[int]]:
    futures: asyncio.Queue[asyncio.Future[int]] = asyncio.Queue()
    turns: list[int] = []
    waiting = asyncio.Event()
    task = asyncio.create_task(_loop(futures, turns, check, waiting))
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    await futures.put(fut)
    await waiting.wait()
    # The reply and the cancellation in the same turn of the event loop.
    fut.set_result(1)
    task.cancel()
    await asyncio.wait({task}, timeout=0.5)
    return task, turns


async def test_a_loop_that_asks_stops_even_when_wait_for_swallowed_the_cancel() -> None:
    task, _ = await _cancel_as_reply_arrives(check=True)
    assert task.cancelled()


async def test_without_asking_the_loop_may_run_on() -> None:
    """What the check is for: on 3.11 the loop got the reply and carried on (on 3.12+
    wait_for raises as it should, and the loop stops either way)."""
    task, turns = await _cancel_as_reply_arrives(check=False)
    try:
        if task.done():
            assert task.cancelled()
        else:
            assert turns == [1]  # the reply was returned, the cancellation dropped
            assert task.cancelling() == 1
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=1)
