"""``orrery.natsserver.free_ports``: ports for a process that listens on several at once."""

from __future__ import annotations

import socket

from orrery.natsserver import free_ports


def test_ports_chosen_together_are_distinct_and_free() -> None:
    # One at a time, a released port may be handed out again at once; a server given one
    # port for two listeners dies (SeaweedFS did, failing four dataset tests).
    for _ in range(20):
        ports = free_ports(12)
        assert len(set(ports)) == 12
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))  # released again: usable by the server
