"""The spoke's tests get a NATS server of their own, one per module.

The session-wide server (tests/conftest.py) is shared with hub tests, whose hubs subscribe
to every cluster's reports: one still draining when a spoke test starts could answer its
agent's heartbeats or send it orders (a kill for a slice it never assigned), which made
fencing tests flaky. Here nothing but the test's own scripted hub is on the server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orrery.natsserver import NatsServer


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer().start()
    yield server
    server.stop()
