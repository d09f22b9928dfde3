"""Cancellation that a library swallowed, noticed by the loop that was cancelled.

On Python 3.11, ``asyncio.wait_for`` returns the awaited result instead of raising
``CancelledError`` when the awaited future completes in the same turn of the event loop as
the cancellation (CPython gh-86296, fixed in 3.12). nats.py's ``request()`` awaits its reply
that way, so a heartbeat loop cancelled just as a reply arrived carried on beating forever,
and whatever waited for it to stop (a TaskGroup, a shutdown) waited forever too. On a loaded
machine that happened about once in ten runs.

The task still says it is being cancelled (``Task.cancelling()`` is not reset by the
swallowing), so each long-lived loop asks once per turn and stops then.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` when the current task was cancelled and is still running."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


__all__ = ["raise_if_cancelled"]
