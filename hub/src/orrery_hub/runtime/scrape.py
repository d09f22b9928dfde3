"""What ``/metrics`` reads from the store at scrape time (gauges of current state), beside
the counters and histograms the hub updates as things happen (``metrics.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orrery.resources import JOB_PHASES
from orrery_hub.store import queries

if TYPE_CHECKING:
    from orrery_hub.runtime.service import HubService


async def refresh(hub: HubService) -> None:
    m = hub.metrics
    counts = await hub.job_counts()
    for phase in JOB_PHASES:
        m.jobs.labels(phase).set(counts.get(phase, 0))
    states: dict[str, int] = {"Ready": 0, "Lost": 0}
    for c in await hub.clusters():
        states[c.state] = states.get(c.state, 0) + 1
        for t, g in c.gpus.items():
            m.gpus.labels(c.name, t, "total").set(g.total)
            m.gpus.labels(c.name, t, "free").set(g.free)
            m.gpus.labels(c.name, t, "used").set(g.total - g.free)
    for state, n in states.items():
        m.clusters.labels(state).set(n)
    pending, in_use = await hub.store.tx(queries.queue_counts)
    # A queue that emptied reads 0, not its last value.
    m.queue_pending.clear()
    m.queue_gpus.clear()
    for q in sorted(set(pending) | set(in_use) | {c.name for c in hub.settings.queues}):
        m.queue_pending.labels(q).set(pending.get(q, 0))
        m.queue_gpus.labels(q).set(in_use.get(q, 0))
    usage = await hub.usage(team=None, since=None)
    for name, spent in usage.teams.items():
        m.team_spend.labels(name).set(spent.cost)
        m.team_gpu_seconds.labels(name).set(spent.gpu_seconds)
