"""``serving.readiness``: when the hub counts a replica ready, as a table."""

from __future__ import annotations

import pytest

from orrery_hub.gateway.hublink import REQUEST_TIMEOUT_S
from orrery_hub.serving.readiness import READY_FRESH_S, counted_ready


@pytest.mark.parametrize(
    ("endpoint", "seen_ago", "gateways", "ready"),
    [
        (False, 0.0, True, False),  # no endpoint: never, whatever a gateway said
        (True, None, False, True),  # no gateway at all: running with an endpoint is enough
        (True, None, True, False),  # gateways, none found it ready
        (True, 0.1, True, True),
        # One exchange unanswered holds a gateway's next report for its whole request
        # timeout: the "ready" before it still counts (5 s, the old window, did not).
        (True, REQUEST_TIMEOUT_S + 0.5, True, True),
        (True, READY_FRESH_S + 0.1, True, False),  # silent past the window: not ready
    ],
)
def test_a_replica_is_counted_ready(
    endpoint: bool, seen_ago: float | None, gateways: bool, ready: bool
) -> None:
    now = 1000.0
    seen = None if seen_ago is None else now - seen_ago
    assert counted_ready(endpoint, seen, gateways, now) is ready
