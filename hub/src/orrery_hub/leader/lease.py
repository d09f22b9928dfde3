"""Claim, renew and fence the hub leadership: functions of a session, called on the store
thread. Time is the database's (``clock_timestamp()`` on PostgreSQL), so the hubs' clocks
never have to agree; on SQLite (one machine) it is the caller's.

Every function locks the row: ``claim`` for update (a change of leader waits for the
transactions that checked the old epoch), ``fence`` for share (many writers at once, none
while the epoch changes). So a write either commits before the epoch moves on, and the new
leader reads it, or sees the new epoch and is rolled back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from orrery.errors import NotLeader
from orrery_hub.store.leaderrows import LeaderRow


@dataclass(frozen=True)
class Leadership:
    """The row as a claim left it."""

    epoch: int
    holder: str
    address: str
    expires_at: float  # database time
    now: float  # database time when it was read

    def held_by(self, me: str) -> bool:
        return self.holder == me and self.expires_at > self.now


def _postgres(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


def db_now(s: Session) -> float:
    if _postgres(s):
        return float(s.exec(text("SELECT extract(epoch FROM clock_timestamp())")).one()[0])  # type: ignore[call-overload]
    return time.time()


def _row(s: Session, *, share: bool) -> LeaderRow | None:
    q = select(LeaderRow).where(LeaderRow.id == 1).with_for_update(read=share)
    return s.exec(q).first()


def ensure_row(s: Session) -> None:
    """Make the row if no hub has yet (two hubs racing: one insert wins, the other finds it)."""
    if _row(s, share=True) is not None:
        return
    try:
        with s.begin_nested():
            s.add(LeaderRow())
    except IntegrityError:
        pass


def claim(s: Session, *, me: str, address: str, ttl_s: float) -> Leadership:
    """Renew this hub's lease if it holds it, take the leadership if the lease has expired
    (a new epoch), else leave the row as it is. Returns the row as it now stands."""
    s.info["unfenced"] = True  # the claim is what the fence checks against
    if _postgres(s):
        # A writer of the old epoch between its fence and its commit holds the row for a
        # moment; wait at most this long, then try again at the next tick.
        s.exec(text("SET LOCAL lock_timeout = '1s'"))  # type: ignore[call-overload]
    row = _row(s, share=False)
    if row is None:
        ensure_row(s)
        row = _row(s, share=False)
        assert row is not None
    now = db_now(s)
    if row.holder == me and row.expires_at > now:
        row.expires_at = now + ttl_s
        row.address = address
        s.add(row)
    elif row.expires_at <= now:
        row.epoch += 1
        row.holder, row.address, row.expires_at = me, address, now + ttl_s
        s.add(row)
    s.flush()
    return Leadership(row.epoch, row.holder, row.address, row.expires_at, now)


def resign(s: Session, *, me: str, epoch: int) -> None:
    """A leader that stops cleanly lets its lease go at once (a standby need not wait)."""
    s.info["unfenced"] = True
    row = _row(s, share=False)
    if row is not None and row.holder == me and row.epoch == epoch:
        row.expires_at = 0.0
        s.add(row)


def fence(s: Session, *, epoch: int) -> None:
    """Refuse the transaction unless ``epoch`` is still the leader's. Called as a write
    transaction's last statement, just before it commits; raises ``NotLeader`` (the caller
    rolls back). The share lock it takes holds off a change of leader until the commit; on
    PostgreSQL the session is ended if this process stalls before committing, so a frozen
    deposed leader cannot hold the row (and its successor) for longer than that."""
    if _postgres(s):
        s.exec(text("SET LOCAL idle_in_transaction_session_timeout = '2s'"))  # type: ignore[call-overload]
    row = _row(s, share=True)
    if row is None or row.epoch != epoch:
        raise NotLeader(
            "this hub is no longer the leader (leader epoch "
            f"{row.epoch if row else 0}, ours {epoch}): the write was not committed",
            leader=row.address if row and row.address else None,
        )


__all__ = ["Leadership", "claim", "db_now", "ensure_row", "fence", "resign"]
