"""Whether the hub counts a replica ready: what its gateways last said of it.

Each gateway probes the replicas it routes to and reports the ready ones every interval
(0.5 s). An exchange the hub does not answer holds a gateway's next report for the whole
request timeout, so a "ready" is believed for twice that timeout and 2 s more. A window of
5 s, the timeout itself, took every replica of a service out of Ready after one lost reply
(seen in CI, mid-roll). Traffic does not depend on this: each gateway routes by its own
probes. Used by ``serving.controller``.

A gateway not heard from for ``GATEWAY_FRESH`` of its intervals is forgotten before
readiness is judged. After the hub could take no report for a while (its store slow under
heavy disk load, the process starved of CPU), the last report is old though no gateway
said anything new: judged against it, every replica left Ready for one tick (tested in
``tests/hub/test_serving_readiness.py``). With no gateway left, a running replica with an
endpoint counts, as when none runs.

Before any gateway has reported on a service (since this hub started), a replica counted
ready that way is recorded as seen ready then, as if a gateway had said so. A gateway's
first report on a service comes before it has probed any replica (it learns the routes
from the answer to that report); without the record, a service shown Ready with every
replica dropped to none ready for a tick, right after ``orrery service apply`` (seen in
CI, on the roll test). Only before: after a gap in reports it would keep a replica the
gateways find broken Ready for as long as the gaps recur.
"""

from __future__ import annotations

from typing import Any

from orrery_hub.gateway.hublink import REQUEST_TIMEOUT_S

READY_FRESH_S = 2 * REQUEST_TIMEOUT_S + 2.0
GATEWAY_FRESH = 4.0  # a gateway's report counts for this many of its intervals


def forget_silent(gateways: dict[str, tuple[float, float, Any]], now: float) -> None:
    """Drop, in place, the gateways (name -> (heard at, interval, load)) not heard lately."""
    for gw, (t, interval, _) in list(gateways.items()):
        if now - t > GATEWAY_FRESH * interval:
            del gateways[gw]


def counted_ready(
    has_endpoint: bool, seen_ready_at: float | None, any_gateway: bool, now: float
) -> bool:
    """Ready: a gateway found it ready lately; with no gateway at all, running with an
    endpoint is the best the hub knows."""
    if not has_endpoint:
        return False
    if not any_gateway:
        return True
    return seen_ready_at is not None and now - seen_ready_at < READY_FRESH_S
