"""NATS clients for the identity tests (hub and e2e): one that collects the errors
nats-server sends it (permission violations arrive asynchronously, not as exceptions),
and a check that the server refuses a connection."""

from __future__ import annotations

import ssl
from typing import Any

import nats


async def connect_watched(url: str, tls: ssl.SSLContext, inbox: str) -> tuple[Any, list[str]]:
    """A client with ``tls`` credentials and its own ``inbox`` prefix, and the list the
    server's errors are appended to."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        url,
        tls=tls,
        inbox_prefix=inbox,
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=3,
    )
    return nc, errors


async def refused(url: str, tls: ssl.SSLContext | None) -> bool:
    """Whether nats-server refuses a client with ``tls`` (None: plain, no certificate)."""
    try:
        nc = await nats.connect(url, tls=tls, allow_reconnect=False, connect_timeout=3)
    except Exception:
        return True
    await nc.close()
    return False
