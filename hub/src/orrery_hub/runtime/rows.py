"""The clusters' rows (``ClusterRow``): the store's copy of the inventory.

A cluster's row is written when it joins, comes back or changes, and refreshed every few
seconds while it reports (``runtime.intake``). Those of clusters with nothing to
reconcile (no slice reported or placed there) are written together, one transaction for
all that are due: a thousand spokes joining at once cost one transaction, not a thousand
(~10 ms each, and every submission waited behind them). A refresh whose content is what the row
already holds (the same node list object, a repeat's: see ``runtime.repeats``, and the
same labels, address, executor and incarnation) only moves ``last_heartbeat``, in one
bulk UPDATE: rewriting a hundred nodes' JSON through the ORM cost ~5 ms a row, and a
thousand idle spokes refreshed every 5 s kept the one store thread busy, and every
submission waiting behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, insert, update
from sqlmodel import Session, col, select

from orrery.wire import Heartbeat, NodeReport
from orrery_hub.store import jobs as jobstore
from orrery_hub.store.models import ClusterRow

# The lane of the rows' batched refresh: no cluster is named with a space.
ROWS_LANE = " cluster rows"
# Rows written in full per transaction: a thousand spokes joining at once must not hold the
# one store thread for seconds in one go, with every submission waiting behind it.
FULL_PER_TX = 100


@dataclass(frozen=True)
class Written:
    """What a cluster's row was last written from."""

    nodes: list[NodeReport]  # compared by identity: equal content, not re-compared
    rest: tuple[object, ...]

    @staticmethod
    def of(hb: Heartbeat) -> Written:
        return Written(
            hb.nodes,
            (hb.incarnation, hb.address, hb.executor, tuple(sorted(hb.labels.items()))),
        )

    def holds(self, hb: Heartbeat) -> bool:
        return self.nodes is hb.nodes and self.rest == Written.of(hb).rest


class Rows:
    """Refreshes due, and what each row was last written from (once committed)."""

    def __init__(self) -> None:
        self.due: dict[str, tuple[Heartbeat, float, bool]] = {}  # (newest, at, joined)
        self.written: dict[str, Written] = {}

    def add(self, hb: Heartbeat, at: float, *, joined: bool) -> None:
        """``hb``'s row is due; ``joined``: the cluster is new to this hub."""
        old = self.due.get(hb.cluster)
        self.due[hb.cluster] = (hb, at, joined or (old is not None and old[2]))

    def committed(self, hb: Heartbeat) -> None:
        """``hb``'s row was written in full and committed."""
        self.written[hb.cluster] = Written.of(hb)

    def take(self) -> tuple[list[tuple[Heartbeat, float, bool]], list[tuple[str, float]]]:
        """The rows due, split: those to write in full (with whether the cluster joined),
        and those whose content stands, to touch (name, last heartbeat)."""
        due, self.due = self.due, {}
        full: list[tuple[Heartbeat, float, bool]] = []
        touch: list[tuple[str, float]] = []
        for name, (hb, at, joined) in due.items():
            w = self.written.get(name)
            if w is not None and w.holds(hb) and not joined:
                touch.append((name, at))
            else:
                full.append((hb, at, joined))
        return full, touch


def write_rows(
    s: Session, full: list[tuple[Heartbeat, float, bool]], touch: list[tuple[str, float]]
) -> None:
    """Rows in bulk: one INSERT for new clusters, one UPDATE for known ones, one for those
    only touched (each an executemany; no row loaded). Through the ORM's unit of work a
    row cost ~2 ms of the store thread's CPU, and far more wall time under load."""
    names = [hb.cluster for hb, _, _ in full]
    there = (
        set(s.exec(select(ClusterRow.name).where(col(ClusterRow.name).in_(names))))
        if names
        else set()
    )
    new: list[dict[str, object]] = []
    old: list[dict[str, object]] = []
    for hb, at, joined in full:
        values = _values(hb, at)
        if hb.cluster in there:
            old.append(values)
        else:
            new.append({**values, "first_seen": at})
        if joined:
            jobstore.add_event(
                s,
                at=at,
                kind="ClusterJoined",
                cluster=hb.cluster,
                message=f"{hb.cluster} joined with {len(hb.nodes)} node(s)",
            )
    if new:
        s.execute(insert(ClusterRow), new)
    if old:
        s.execute(update(ClusterRow), old)  # ORM bulk UPDATE by primary key
    if touch:
        # A Core executemany: the ORM's bulk UPDATE by primary key cost ~4x the CPU a row,
        # and a thousand clusters' touches come every few seconds.
        t = ClusterRow.__table__  # type: ignore[attr-defined]
        s.execute(
            update(t)
            .where(t.c.name == bindparam("n"))
            .values(last_heartbeat=bindparam("at"), state="Ready"),
            [{"n": n, "at": at} for n, at in touch],
        )


def _values(hb: Heartbeat, now: float) -> dict[str, object]:
    return {
        "name": hb.cluster,
        "labels": dict(hb.labels),
        "state": "Ready",
        "address": hb.address,
        "executor": hb.executor,
        "incarnation": hb.incarnation,
        "nodes": [n.model_dump() for n in hb.nodes],
        "last_heartbeat": now,
    }


def write_row(s: Session, hb: Heartbeat, now: float) -> None:
    row = s.get(ClusterRow, hb.cluster)
    if row is None:
        row = ClusterRow(name=hb.cluster, first_seen=now, last_heartbeat=now)
    row.labels = dict(hb.labels)
    row.state = "Ready"
    row.address = hb.address
    row.executor = hb.executor
    row.incarnation = hb.incarnation
    row.nodes = [n.model_dump() for n in hb.nodes]
    row.last_heartbeat = now
    s.add(row)
