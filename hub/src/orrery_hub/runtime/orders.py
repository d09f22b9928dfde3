"""Orders out: each order stamped (a fresh seq, an expiry, the hub's signature) and
published to its cluster's subject, one at a time so one failure never holds the rest."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from orrery.wire import (
    Assignment,
    Kill,
    Prefetch,
    Subjects,
    encode,
)
from orrery.wire.signing import sign
from orrery_hub.runtime.parts import HubParts

log = logging.getLogger("orrery.hub")


class OrderOutbox(HubParts):
    async def _publish(self, orders: Sequence[tuple[str, Assignment | Kill | Prefetch]]) -> None:
        if not orders or self.nc is None:
            return
        failed = 0
        for cluster, order in orders:
            # Each order on its own: one that cannot go (too large, NATS down) never keeps
            # the rest of the batch from their spokes. The next heartbeat resends it.
            try:
                stamped = self.stamp(order)
                await self.nc.publish(Subjects(cluster).orders, encode(stamped))
                self.metrics.orders.labels(order.kind).inc()
            except Exception as exc:
                failed += 1
                log.warning(
                    "could not publish order",
                    extra={
                        "cluster": cluster,
                        "job": order.job,
                        "slice": getattr(order, "index", None),
                        "epoch": getattr(order, "epoch", None),
                        "error": str(exc)[:500],
                    },
                )
        if failed == len(orders):
            return
        try:
            await self.nc.flush(timeout=1)
        except Exception:
            pass  # buffered; sent on reconnect or repaired by the next heartbeat

    def stamp(self, order: Assignment | Kill | Prefetch) -> Assignment | Kill | Prefetch:
        """The order as sent: a fresh seq, an expiry, the hub's signature over them all."""
        # Wall time, not self.clock: a spoke judges the expiry by its own wall clock.
        expires = time.time() + self.settings.order_ttl
        return sign(
            order.model_copy(update={"seq": next(self._seq), "expires_at": expires}),
            self.order_key,
        )
