"""What a reconcile step decides besides the rows it writes: orders to publish once its
transaction commits, slices the spoke may forget, and whether a pass should run."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from orrery.wire import Assignment, Kill, SliceKey

log = logging.getLogger("orrery.hub.reconcile")


@dataclass
class Outbox:
    """Orders to publish once the transaction that decided them has committed."""

    orders: list[tuple[str, Assignment | Kill]] = field(default_factory=list)
    forget: list[SliceKey] = field(default_factory=list)
    changed: bool = False  # something a scheduling pass should look at

    def kill(
        self, cluster: str, job: str, index: int, epoch: int, reason: str, grace_s: float
    ) -> None:
        self.orders.append(kill_order(cluster, job, index, epoch, reason, grace_s))

    def extend(self, other: Outbox) -> None:
        self.orders.extend(other.orders)
        self.forget.extend(other.forget)
        self.changed = self.changed or other.changed


def kill_order(
    cluster: str, job: str, index: int, epoch: int, reason: str, grace_s: float
) -> tuple[str, Kill]:
    """Stop ``job``'s slice ``index`` at ``epoch`` (or older) on ``cluster``."""
    kill = Kill(
        sender="hub", seq=0, job=job, index=index, epoch=epoch, reason=reason, grace_s=grace_s
    )
    return cluster, kill
