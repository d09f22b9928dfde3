"""The lease, on Kubernetes, and the patrol for pods that escaped it.

Each Job carries ``activeDeadlineSeconds``, counted by the Kubernetes job controller from
the Job's start. Whenever the hub answers a heartbeat the agent moves each running Job's
deadline to one lease past now (``renew``: it writes only when less than half a lease is
left, so a Job costs one patch per half lease). If the agent dies, or is cut off from the
hub, nobody moves the deadline and the job controller itself stops the pod
(``DeadlineExceeded``) at most one lease after the hub's last reply, whatever the workload
image holds: nothing runs inside the pod, and the pod needs no credentials. The hub's
failover timeout is longer than lease + kill grace, so the slice has stopped before the hub
places it elsewhere. Caveats: the deadline is whole seconds and counted on the control
plane's clock (keep clocks NTP-synced; skew adds to the lease), and a control plane that is
down itself cannot stop the pod.

A pod that nevertheless leaves its Job (its labels changed by whoever may patch pods) is no
longer bounded by the Job's deadline: the agent finds it by its immutable name, deletes it
and ends the attempt (``catch_escapes``: every second from ``patrol``, and on every lease
renewal — an agent cut off from the hub still looks, since the deadline no longer bounds
such a pod). The Jobs of attempts the hub has recorded as ended are deleted here too
(``delete_released``), retried with each renewal while the API is away.

Functions of the ``KubeExecutor`` whose state they read and write.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from orrery.cancellation import raise_if_cancelled
from orrery_spoke_agent.executor.kubernetes import jobs as kj
from orrery_spoke_agent.executor.kubernetes.apierrors import status_of

if TYPE_CHECKING:
    from orrery.wire import Assignment
    from orrery_spoke_agent.executor.kubernetes.executor import KubeExecutor

log = logging.getLogger("orrery.spoke.kubernetes")

PATROL_S = 1.0  # how often the patrol looks for escaped pods


async def patrol(ex: KubeExecutor) -> None:
    """Look for escaped pods every PATROL_S, until cancelled (``close``)."""
    while True:
        raise_if_cancelled()
        await asyncio.sleep(PATROL_S)  # a period, not synchronisation
        try:
            await catch_escapes(ex)
        except Exception as exc:  # the API away: the next round tries again
            log.warning("looking for escaped pods failed: %s", str(exc)[:200],
                        extra={"cluster": ex.cluster})


async def delete_released(ex: KubeExecutor) -> None:
    """Delete the Jobs of ended attempts the hub has recorded; what fails (the API is
    away) is tried again with the next lease renewal."""
    for name in sorted(ex._unreleased):
        try:
            await ex._delete_job(name, foreground=False)
        except Exception as exc:
            log.warning("could not delete ended Job %s (will retry): %s", name,
                        str(exc)[:200], extra={"cluster": ex.cluster})
            return
        ex._unreleased.discard(name)


async def catch_escapes(ex: KubeExecutor) -> None:
    """Delete every live pod of this spoke's attempts that left its Job, and end the
    attempt it belonged to: nothing else would stop it (it escaped the deadline)."""
    from kubernetes import client

    for pod in ex.pods.items():
        md = pod.get("metadata") or {}
        if md.get("namespace") != ex.ns or md.get("deletionTimestamp"):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        owner = kj.owner_by_name(str(md.get("name", "")), ex._names)
        if owner is None or not kj.escaped(pod, owner, ex.cluster):
            continue
        k = ex._names[owner]
        a = ex._assignments.get(k)
        reason = f"killed: its pod {md['name']} left its Job"
        if md["name"] not in ex._caught:
            ex._caught.add(md["name"])
            ex.escapes += 1
            log.warning("pod left its Job; deleting it", extra={
                "job": k[0], "slice": k[1], "epoch": k[2], "cluster": ex.cluster,
                "pod": md["name"], "job_name": owner})
        if a is not None and k in ex._live:
            ex._stop_reasons.setdefault(k, reason)
            try:
                await ex._delete_job(owner, foreground=True, grace_s=0)
            except Exception as exc:
                ex._log("could not delete Job", a, level=logging.WARNING,
                        error=str(exc)[:200])
        try:
            await ex._call(ex.core.delete_namespaced_pod, md["name"], ex.ns,
                           body=client.V1DeleteOptions(grace_period_seconds=0))
        except Exception as exc:
            if status_of(exc) != 404:
                log.warning("could not delete escaped pod %s (will retry): %s", md["name"],
                            str(exc)[:200], extra={"cluster": ex.cluster})
    ex._wake()


async def renew(ex: KubeExecutor, now: float) -> None:
    """The hub answered a heartbeat at ``now``: move each running Job's deadline to one
    lease past it (only where less than half a lease is left)."""
    if ex._unreleased:
        await delete_released(ex)
    await catch_escapes(ex)
    patches: list[tuple[Assignment, str, int]] = []
    for k in list(ex._live):
        a = ex._assignments.get(k)
        if a is None or k in ex._stop_reasons:
            continue
        name = kj.job_name(a.key)
        job = ex.jobs.get(ex.ns, name)
        if job is None:
            continue
        status, spec = job.get("status") or {}, job.get("spec") or {}
        start = kj.timestamp(status.get("startTime")) or kj.timestamp(
            job["metadata"].get("creationTimestamp")) or ex._launched.get(k, now)
        elapsed = now - start
        current = spec.get("activeDeadlineSeconds")
        if current is not None and current - elapsed >= ex.t.lease_s / 2:
            continue  # more than half a lease left: spare the API a write
        new = kj.deadline_s(elapsed, ex.t.lease_s, a.max_runtime_s)
        if current is None or new > current:
            patches.append((a, name, new))
    results = await asyncio.gather(*(ex._call(
        ex.batch.patch_namespaced_job, name, ex.ns,
        {"spec": {"activeDeadlineSeconds": new}}) for _a, name, new in patches),
        return_exceptions=True)
    for (a, name, _new), r in zip(patches, results, strict=True):
        if isinstance(r, BaseException):
            ex._log("could not renew the Job's lease", a, level=logging.WARNING,
                    job_name=name, error=str(r)[:200])
