"""Hub standby: several hubs on one database, one leader by a lease, every write fenced.

- ``store.leaderrows``  the ``hub_leader`` table: one row, the epoch, holder and expiry
- ``lease``    claim, renew and fence, as functions of a database session (no clock of
               the hub's own: the database's time decides expiry)
- ``elector``  the asyncio loop that claims or renews, and tells the hub when it starts or
               stops leading; the fence every write transaction runs before it commits
- ``http``     the API's guard: a standby answers writes 503 with the leader's address

Why a row and not a PostgreSQL advisory lock: a session-level advisory lock is held for as
long as its connection lives, so a leader that hangs (SIGSTOP, a GC pause, a stuck thread)
while its TCP session stays open keeps the lock forever, and nothing can fence its late
writes; it also breaks behind a transaction-pooling proxy (pgbouncer). A row with an epoch
and an expiry in the database's own time bounds a silent leader's reign to its lease, and
its epoch, checked under a row lock inside each write transaction, refuses any commit of a
deposed leader that wakes up. The same row works on SQLite (a single-machine hub).
"""

from orrery_hub.leader.elector import Elector
from orrery_hub.leader.lease import Leadership, claim, fence

__all__ = ["Elector", "Leadership", "claim", "fence"]
