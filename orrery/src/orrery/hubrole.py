"""Which of several hubs leads, as each says on ``/healthz`` (``role``: leader or standby).
For ``orrery up --ha``, the end-to-end tests and the benchmarks; the CLI needs none of it
(a standby's 503 names the leader)."""

from __future__ import annotations

import time

import httpx

from orrery.errors import Unavailable


def role(url: str) -> str | None:
    """``leader`` or ``standby``; None when the hub is down or is the only one."""
    try:
        r = httpx.get(f"{url}/healthz", timeout=2)
        found = r.json().get("role") if r.content else None
    except (httpx.HTTPError, ValueError):
        return None
    return str(found) if found else None


def wait_leader(urls: dict[int, str], *, timeout: float = 60.0, poll_s: float = 0.05) -> int:
    """Until one of ``urls`` (index -> API URL) leads; returns its index."""
    deadline = time.monotonic() + timeout
    while True:
        for i in sorted(urls):
            if role(urls[i]) == "leader":
                return i
        if time.monotonic() > deadline:
            raise Unavailable(f"no hub leads after {timeout}s: {sorted(urls.values())}")
        time.sleep(poll_s)


__all__ = ["role", "wait_leader"]
