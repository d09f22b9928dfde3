"""The hub's side of the leader lease: an asyncio loop that claims the leadership or renews
it every third of the lease, and the fence every write transaction runs.

Who calls it: ``service.Hub`` starts ``run`` under its TaskGroup, asks ``leading`` before
it schedules, processes reports or accepts an API write, and gives ``fence`` to the store
(``Database.fence``), which runs it before committing any transaction that wrote.

A hub leads from a successful claim until its own clock says the lease it last renewed is
up (its renewals may be failing: a partition from the database), or a claim shows another
holder. Stepping down is local and immediate; stepping up waits for the old lease to expire
in the database's time. Between the two, nobody leads, writes are refused everywhere, and
spokes keep their slices (their lease is longer than the handover; ``Timing.check``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from sqlmodel import Session

from orrery.cancellation import raise_if_cancelled
from orrery.errors import NotLeader
from orrery_hub.leader import lease
from orrery_hub.leader.lease import Leadership

log = logging.getLogger("orrery.hub.leader")
T = TypeVar("T")


class Store(Protocol):
    async def tx(self, fn: Callable[[Session], T]) -> T: ...


class Elector:
    def __init__(
        self,
        store: Store,
        *,
        address: str,
        ttl_s: float,
        on_lead: Callable[[int], Awaitable[None]] | None = None,
        on_depose: Callable[[], Awaitable[None]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.me = uuid.uuid4().hex[:16]
        self.address = address
        self.ttl_s = ttl_s
        self.renew_s = ttl_s / 3
        self.on_lead = on_lead
        self.on_depose = on_depose
        self.monotonic = monotonic
        self.epoch: int | None = None  # the epoch this hub leads at, None when standby
        self.leader_address: str | None = None  # the leader's API URL, as last read
        self._until = 0.0  # monotonic: our lease's end, as our clock bounds it
        self.changed = asyncio.Event()  # set at every change of role (tests, metrics)

    @property
    def leading(self) -> bool:
        return self.epoch is not None and self.monotonic() < self._until

    def fence(self, s: Session) -> None:
        """Run before a write transaction commits: refuse it unless this hub leads."""
        epoch = self.epoch
        if epoch is None or not self.leading:
            raise self.not_leader()
        lease.fence(s, epoch=epoch)

    def not_leader(self) -> NotLeader:
        where = self.leader_address if self.leader_address != self.address else None
        return NotLeader(
            "this hub is a standby: writes go to the leader"
            + (f" at {where}" if where else " (none elected yet: retry in a moment)"),
            leader=where,
        )

    async def claim_once(self) -> Leadership | None:
        started = self.monotonic()
        try:
            got = await self.store.tx(
                lambda s: lease.claim(s, me=self.me, address=self.address, ttl_s=self.ttl_s)
            )
        except Exception as exc:  # the database unreachable, a lock timeout: not leading now
            log.warning("leader lease: claim failed", extra={"error": repr(exc)[:300]})
            await self._maybe_expire()
            return None
        self.leader_address = got.address or None
        if got.held_by(self.me):
            # Our clock's bound: counted from before the claim was sent, so it ends no later
            # than the database's expiry (rates drift far less than a lease in that time).
            self._until = started + (got.expires_at - got.now)
            if self.epoch != got.epoch:
                was = self.epoch
                self.epoch = got.epoch
                log.warning(
                    "leading", extra={"epoch": got.epoch, "previous_epoch": was, "hub": self.me}
                )
                self.changed.set()
                if self.on_lead is not None:
                    await self.on_lead(got.epoch)
        elif self.epoch is not None:
            await self._step_down(f"the lease is held by {got.holder} at epoch {got.epoch}")
        return got

    async def _maybe_expire(self) -> None:
        if self.epoch is not None and self.monotonic() >= self._until:
            await self._step_down("could not renew the lease before it ran out")

    async def _step_down(self, why: str) -> None:
        log.warning("no longer leading", extra={"epoch": self.epoch, "why": why})
        self.epoch = None
        self._until = 0.0
        self.changed.set()
        if self.on_depose is not None:
            await self.on_depose()

    async def run(self) -> None:
        while True:
            raise_if_cancelled()
            t0 = self.monotonic()
            await self.claim_once()
            await self._maybe_expire()
            # A standby polls as often as the leader renews: it takes over at most a third
            # of a lease after the old one expires.
            await asyncio.sleep(max(0.0, self.renew_s - (self.monotonic() - t0)))

    async def resign(self) -> None:
        """A clean stop: let the lease go, so a standby takes over without waiting."""
        epoch = self.epoch
        if epoch is None:
            return
        self.epoch = None
        try:
            await self.store.tx(lambda s: lease.resign(s, me=self.me, epoch=epoch))
        except Exception as exc:
            log.warning("leader lease: resign failed", extra={"error": repr(exc)[:300]})


__all__ = ["Elector"]
