"""Whether the hub counts a replica ready: what its gateways last said of it.

Each gateway probes the replicas it routes to and reports the ready ones every interval
(0.5 s). An exchange the hub does not answer holds a gateway's next report for the whole
request timeout, so a "ready" is believed for twice that timeout and 2 s more. A window of
5 s, the timeout itself, took every replica of a service out of Ready after one lost reply
(seen in CI, mid-roll). Traffic does not depend on this: each gateway routes by its own
probes. Used by ``serving.controller``.
"""

from __future__ import annotations

from orrery_hub.gateway.hublink import REQUEST_TIMEOUT_S

READY_FRESH_S = 2 * REQUEST_TIMEOUT_S + 2.0


def counted_ready(
    has_endpoint: bool, seen_ready_at: float | None, any_gateway: bool, now: float
) -> bool:
    """Ready: a gateway found it ready lately; with no gateway at all, running with an
    endpoint is the best the hub knows."""
    if not has_endpoint:
        return False
    if seen_ready_at is None:
        return not any_gateway
    return now - seen_ready_at < READY_FRESH_S
