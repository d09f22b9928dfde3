"""One way for the hub and the spoke agent to connect to NATS: the first connection retried
(bounded, jittered, exponential), then nats-py's own endless reconnection with the same
keep-alive, TLS and inbox settings on both sides.

Only the first connection needs retrying here: once connected, the client reconnects by
itself, forever, and the callbacks say when it lost and found the server again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NATS
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

log = logging.getLogger("orrery.nats")

Callback = Callable[[], Awaitable[None]]

# What a first connection may fail with and still succeed later (the server is starting, a
# name does not resolve yet); anything else (a bad certificate, refused credentials) is
# raised at once.
RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
    asyncio.TimeoutError,
)


@dataclass(frozen=True)
class Retry:
    """How long and how fast to retry the first connection."""

    give_up_after_s: float = 300.0
    first_wait_s: float = 0.2  # the exponential's multiplier; each wait is jittered
    max_wait_s: float = 5.0
    on: tuple[type[BaseException], ...] = RETRYABLE


async def connect(
    url: str,
    *,
    name: str,
    retry: Retry = Retry(),
    tls: ssl.SSLContext | None = None,
    inbox_prefix: str | None = None,
    on_disconnect: Callback | None = None,
    on_reconnect: Callback | None = None,
    context: dict[str, object] | None = None,
) -> NATS:
    """A connected client to ``url``: one server, or several comma-separated (the members of
    a cluster). ``inbox_prefix``: with TLS, each identity has its own (nats-server
    lets only it read its replies). ``context``: fields for the log lines (cluster, ...)."""
    extra = dict(context or {})

    # A caller's callback says it in its own words; without one, these lines do.
    async def disconnected() -> None:
        if on_disconnect is None:
            log.warning("lost NATS; reconnecting", extra=extra)
        else:
            await on_disconnect()

    async def reconnected() -> None:
        if on_reconnect is None:
            log.info("reconnected to NATS", extra=extra)
        else:
            await on_reconnect()

    async def error(exc: Exception) -> None:
        log.debug("nats: %r", exc)

    # Several servers (a cluster), comma-separated: the client connects to any and moves to
    # another when that one goes.
    servers = [u.strip() for u in url.split(",") if u.strip()]
    options: dict[str, Any] = {}
    if tls is not None:
        options["tls"] = tls
    if inbox_prefix is not None:
        options["inbox_prefix"] = inbox_prefix
    nc: NATS | None = None
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(retry.give_up_after_s),
        wait=wait_random_exponential(multiplier=retry.first_wait_s, max=retry.max_wait_s),
        retry=retry_if_exception_type(retry.on),
        reraise=True,
    ):
        with attempt:
            nc = await nats.connect(
                servers,
                **options,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                connect_timeout=2,
                ping_interval=5,
                max_outstanding_pings=2,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
            )
    assert nc is not None  # AsyncRetrying either ran the block to success or raised
    return nc


__all__ = ["RETRYABLE", "Retry", "connect"]
