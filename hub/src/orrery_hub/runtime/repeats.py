"""A heartbeat that repeats its cluster's last one, but for its seq, is not decoded again.

Decoding a spoke's heartbeat of 100 nodes costs ~0.5 ms of validation, so a thousand idle
spokes at 1 Hz would take half of the hub's event loop saying nothing new. Per cluster,
this keeps the last heartbeat's bytes with its top-level ``"seq":N`` cut out, where it
sat, and the model they decoded to. A new message from the same cluster's subject (only
that cluster may publish there) whose bytes, cut the same way at the same place, are
equal is that model with the new seq; anything else is decoded in full, as before.

Called by ``runtime.intake`` on the report callback.
"""

from __future__ import annotations

import re

from orrery.wire import Heartbeat
from orrery.wire.messages import INT64_MAX

_SEQ = re.compile(rb'"seq":(\d{1,19})')
MAX_CLUSTERS = 100_000  # past this many remembered, start again (memory stays bounded)


class Repeats:
    def __init__(self) -> None:
        self._last: dict[str, tuple[int, bytes, Heartbeat]] = {}

    def lookup(self, cluster: str, data: bytes) -> Heartbeat | None:
        last = self._last.get(cluster)
        if last is None:
            return None
        m = _SEQ.search(data)
        if m is None or m.start() != last[0]:
            return None
        seq = int(m.group(1))
        if seq > INT64_MAX or data[: m.start()] + data[m.end() :] != last[1]:
            return None
        return last[2].model_copy(update={"seq": seq})

    def remember(self, cluster: str, data: bytes, hb: Heartbeat) -> None:
        m = _SEQ.search(data)
        if m is None:
            return
        if len(self._last) >= MAX_CLUSTERS and cluster not in self._last:
            self._last.clear()
        self._last[cluster] = (m.start(), data[: m.start()] + data[m.end() :], hb)
