"""Clusters and nodes gone silent, and attempts whose fate stayed unknown past their bound:
their attempts close as Lost, and their slices go back to the queue."""

from __future__ import annotations

import logging

from sqlmodel import Session, col, select

from orrery_hub.config.settings import HubSettings
from orrery_hub.reconcile.lifecycle import close_attempt
from orrery_hub.reconcile.outbox import Outbox
from orrery_hub.store.jobs import add_event
from orrery_hub.store.models import AttemptRow

log = logging.getLogger("orrery.hub.reconcile")


def settle_unknown(s: Session, *, now: float, settings: HubSettings) -> Outbox:
    """Close the attempts whose fate stayed unknown past their bound, as Lost."""
    out = Outbox()
    for a in s.exec(
        select(AttemptRow).where(
            col(AttemptRow.ended_at).is_(None),
            col(AttemptRow.fate_unknown_until).is_not(None),
            col(AttemptRow.fate_unknown_until) <= now,
        )
    ).all():
        close_attempt(
            s,
            a,
            phase="Lost",
            now=now,
            reason=a.reason or "vanished",
            cause=a.cause,
            settings=settings,
            out=out,
        )
    return out


def fail_cluster(s: Session, cluster: str, *, now: float, settings: HubSettings) -> Outbox:
    """The cluster is Lost: its spoke's lease has stopped its slices; place them elsewhere."""
    out = Outbox()
    for a in s.exec(
        select(AttemptRow).where(AttemptRow.cluster == cluster, col(AttemptRow.ended_at).is_(None))
    ).all():
        close_attempt(
            s,
            a,
            phase="Lost",
            now=now,
            reason="cluster lost (silent past the failover timeout)",
            settings=settings,
            out=out,
        )
    add_event(
        s,
        at=now,
        kind="ClusterLost",
        cluster=cluster,
        message=f"{cluster} silent past {settings.timing.failover_timeout_s}s",
    )
    return out


def fail_nodes(
    s: Session, cluster: str, nodes: set[str], *, now: float, settings: HubSettings
) -> Outbox:
    """Nodes the spoke no longer reports (or reports not ready): their slices move."""
    out = Outbox()
    for a in s.exec(
        select(AttemptRow).where(AttemptRow.cluster == cluster, col(AttemptRow.ended_at).is_(None))
    ).all():
        if a.node in nodes:
            out.kill(cluster, a.job_id, a.index, a.epoch, "node lost", settings.timing.kill_grace_s)
            close_attempt(
                s,
                a,
                phase="Lost",
                now=now,
                reason=f"node lost ({a.node})",
                settings=settings,
                out=out,
            )
    return out
