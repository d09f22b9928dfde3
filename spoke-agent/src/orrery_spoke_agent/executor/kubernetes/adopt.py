"""Adoption: the Jobs an earlier agent of this spoke left running, taken over on start.

``discover`` lists this spoke's Jobs and their pods straight from the API (the reflectors
may not have listed yet), deletes Jobs of epochs the hub has since replaced, and records
the rest in the ``KubeExecutor`` as if it had launched them, so their leases are renewed
and their ends reported. Running Jobs never stop for an agent restart (``outlives_agent``).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from orrery_spoke_agent.executor.base import Found
from orrery_spoke_agent.executor.kubernetes import jobs as kj

if TYPE_CHECKING:
    from orrery.wire import Assignment
    from orrery_spoke_agent.executor.kubernetes.executor import KubeExecutor

log = logging.getLogger("orrery.spoke.kubernetes")


async def discover(ex: KubeExecutor) -> list[Found]:
    """The attempts this spoke's Jobs hold: running ones adopted, ended ones with their
    outcome, stale epochs deleted."""
    sel = kj.selector(ex.cluster)
    jobs_raw = await ex._call(ex.batch.list_namespaced_job, ex.ns,
                              label_selector=sel, _preload_content=False)
    pods_raw = await ex._call(ex.core.list_namespaced_pod, ex.ns,
                              label_selector=sel, _preload_content=False)
    jobs = json.loads(jobs_raw.data).get("items") or []
    pods = json.loads(pods_raw.data).get("items") or []
    newest: dict[tuple[str, int], int] = {}
    parsed: list[tuple[dict[str, Any], Assignment]] = []
    for job in jobs:
        a = kj.assignment_of(job)
        if a is None:
            log.warning("Job %s has no readable assignment; leaving it alone",
                        job["metadata"]["name"], extra={"cluster": ex.cluster})
            continue
        parsed.append((job, a))
        newest[(a.job, a.index)] = max(newest.get((a.job, a.index), -1), a.epoch)
    found: list[Found] = []
    now = ex.clock()
    for job, a in parsed:
        name = job["metadata"]["name"]
        if a.epoch < newest[(a.job, a.index)]:
            ex._log("deleting stale Job left by an earlier agent", a, job_name=name)
            await ex._delete_job(name, foreground=True)
            continue
        created = kj.timestamp(job["metadata"].get("creationTimestamp")) or now
        started = kj.timestamp((job.get("status") or {}).get("startTime")) or created
        mine = [p for p in pods
                if ((p.get("metadata") or {}).get("labels") or {}).get(kj.L_ATTEMPT) == name]
        outcome = kj.judge(job, mine, now=now, launched_at=created,
                           pending_timeout_s=ex.cfg.pending_timeout_s, stop_reason=None,
                           max_runtime_s=a.max_runtime_s)
        k = kj.key_of(a.key)
        ex._assignments[k] = a
        ex._launched[k] = created
        ex._seen.add(name)
        ex._remember(name, k)
        if outcome is None:
            ex._live.add(k)
            ex._log("adopting running Job", a, job_name=name)
        found.append(Found(a, started, outcome))
    return found
