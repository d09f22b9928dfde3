"""Kubernetes executor: each slice a ``batch/v1`` Job; capacity from Nodes and Pods.

Built by ``cli`` (``orrery spoke --executor kubernetes``) through ``startup.build``; the agent
calls the ``Executor`` methods. Three reflectors (``watch``) keep Nodes, Pods (all
namespaces, to see other tenants' GPU requests) and this spoke's Jobs current by
list-then-watch; Job creates, deletes and patches run on a small dedicated thread pool.
So the synchronous ``kubernetes`` client never blocks the agent's event loop.

The lease (each Job's ``activeDeadlineSeconds``, moved on with every heartbeat the hub
answers) and the patrol for pods that left their Job are in ``lease``; adopting the Jobs an
earlier agent left is in ``adopt``; ``build`` and the cluster's topology in ``startup``.
Slices hold no API credentials (no service-account token is mounted unless the chart names
an account): their progress reaches the agent over a per-attempt token (``progress``).

Configuration beyond the CLI flags (GPU resource names, tolerations, a default image,
volumes for checkpoints, the pending timeout) comes from the YAML file named by
``ORRERY_KUBE_EXECUTOR_CONFIG`` (the Helm chart mounts it); see ``KubeConfig``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from orrery.wire import Assignment, NodeReport, Progress, SliceKey
from orrery_spoke_agent.executor.base import Found, LaunchError, LogStream, Outcome
from orrery_spoke_agent.executor.kubernetes import adopt, lease, podlog
from orrery_spoke_agent.executor.kubernetes import capacity as capa
from orrery_spoke_agent.executor.kubernetes import jobs as kj
from orrery_spoke_agent.executor.kubernetes.apierrors import status_of, transient
from orrery_spoke_agent.executor.kubernetes.config import KubeConfig
from orrery_spoke_agent.executor.kubernetes.progress import (
    ProgressEndpoint,
    new_token,
    token_matches,
)
from orrery_spoke_agent.executor.kubernetes.watch import Reflector

log = logging.getLogger("orrery.spoke.kubernetes")
__all__ = ["KubeExecutor"]

CHECK_S = 1.0  # how often a waiting slice re-checks its pending timeout without an event
REMEMBERED = 4096  # attempt names kept after release, to recognise their pods


class KubeExecutor:
    name = "kubernetes"
    # Its Jobs run on without the agent, fenced by their deadline (the lease) and adopted by
    # the next agent: an agent that merely restarts (an upgrade) need not stop them.
    outlives_agent = True

    def __init__(self, api_client: Any, cfg: KubeConfig, template: kj.JobTemplate, *,
                 clock: Callable[[], float] = time.time) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.cfg = cfg
        self.t = template
        self.cluster = template.cluster
        self.ns = template.namespace
        self.clock = clock
        self.pool = ThreadPoolExecutor(max_workers=cfg.api_workers,
                                       thread_name_prefix="orrery-kube-api")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Event] = set()
        self._assignments: dict[kj.K, Assignment] = {}
        self._launched: dict[kj.K, float] = {}
        self._live: set[kj.K] = set()  # launched or adopted, not yet ended
        self._seen: set[str] = set()  # Job names the watch has shown at least once
        self._stop_reasons: dict[kj.K, str] = {}
        self._unreleased: set[str] = set()  # ended Jobs whose deletion has to be retried
        self._digests: dict[str, str] = {}  # Job name -> SHA-256 of its progress token
        self._names: OrderedDict[str, kj.K] = OrderedDict()  # every attempt seen, bounded
        self.escapes = 0  # pods found outside their Job and deleted
        self._caught: set[str] = set()  # their names: counted and logged once
        self.progress_endpoint: ProgressEndpoint | None = None
        # Copies of deleted Jobs' pod logs (None: none kept), and their own thread pool: a
        # followed log blocks a thread for as long as it is read.
        self.log_dir: Path | None = None
        self.log_retention_s = 86400.0
        self.log_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="orrery-kube-log")
        self._patrol: asyncio.Task[None] | None = None
        sel = kj.selector(self.cluster)
        wt, cl = cfg.watch_timeout_s, self.cluster
        self.nodes = Reflector("nodes", self.core.list_node, on_change=self._changed,
                               watch_timeout_s=wt, cluster=cl)
        self.pods = Reflector("pods", self.core.list_pod_for_all_namespaces,
                              on_change=self._changed, watch_timeout_s=wt, cluster=cl)
        self.jobs = Reflector("jobs", functools.partial(self.batch.list_namespaced_job, self.ns),
                              on_change=self._changed, watch_timeout_s=wt, cluster=cl,
                              label_selector=sel)

    def start(self) -> KubeExecutor:
        for r in (self.nodes, self.pods, self.jobs):
            r.start()
        if self.cfg.progress_listen is not None:
            self.progress_endpoint = ProgressEndpoint(self.cfg.progress_listen, self._verify)
        return self

    def _verify(self, name: str, token: str) -> bool:
        """On the endpoint's thread: is ``token`` the one this spoke gave Job ``name``?"""
        recorded = self._digests.get(name)
        if recorded is None:
            job = self.jobs.get(self.ns, name)
            recorded = ((job or {}).get("metadata") or {}).get("annotations", {}).get(
                kj.A_PROGRESS_TOKEN)
        return token_matches(token, recorded)

    def _remember(self, name: str, k: kj.K) -> None:
        self._names[name] = k
        self._names.move_to_end(name)
        while len(self._names) > REMEMBERED:
            self._names.popitem(last=False)

    # ---- plumbing ----------------------------------------------------------------------

    def _log(self, msg: str, key: SliceKey | Assignment, *, level: int = logging.INFO,
             **kw: object) -> None:
        log.log(level, msg, extra={"job": key.job, "slice": key.index, "epoch": key.epoch,
                                   "cluster": self.cluster, **kw})

    def _changed(self) -> None:
        """Called from a reflector thread after every change: wake the waiting slices."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:
                pass  # the loop closed meanwhile

    def _wake(self) -> None:
        for ev in self._waiters:
            ev.set()

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call on the pool, retried (bounded, jittered) while the API is flaky."""
        self._loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, _request_timeout=15, **kwargs)
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(5) | stop_after_delay(20),
            wait=wait_random_exponential(multiplier=0.2, max=3),
            retry=retry_if_exception(transient), reraise=True,
        ):
            with attempt:
                return await self._loop.run_in_executor(self.pool, call)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _delete_job(self, name: str, *, foreground: bool, grace_s: float | None = None
                          ) -> None:
        from kubernetes import client

        body = client.V1DeleteOptions(
            propagation_policy="Foreground" if foreground else "Background",
            grace_period_seconds=None if grace_s is None else max(0, math.ceil(grace_s)))
        try:
            await self._call(self.batch.delete_namespaced_job, name, self.ns, body=body)
        except Exception as exc:
            if status_of(exc) != 404:
                raise

    def _start_patrol(self) -> None:
        """From the first call on the agent's loop: look for escaped pods every CHECK_S."""
        self._loop = asyncio.get_running_loop()
        if self._patrol is None:
            self._patrol = self._loop.create_task(lease.patrol(self), name="escaped pods")

    def _pods_of(self, name: str) -> list[dict[str, Any]]:
        return [p for p in self.pods.items()
                if ((p.get("metadata") or {}).get("labels") or {}).get(kj.L_ATTEMPT) == name]

    # ---- Executor ----------------------------------------------------------------------

    async def launch(self, a: Assignment, env: Mapping[str, str]) -> float:
        self._start_patrol()
        if not (a.image or self.t.default_image):
            raise LaunchError("no image: a Kubernetes spoke runs spec.image, and the job "
                              "names none (nor does this spoke's defaultImage)", retryable=False)
        raw_node = self.nodes.get(None, a.node)
        info = capa.node_info(raw_node, self.cfg.gpu_resources) if raw_node else None
        token = new_token() if self.cfg.progress_url and self.progress_endpoint else None
        body = kj.manifest(a, env, self.t, resource=info.resource if info else None,
                           product=info.product if info else None,
                           progress=(self.cfg.progress_url or "", token) if token else None)
        name = body["metadata"]["name"]
        self._remember(name, kj.key_of(a.key))
        if token is not None:
            self._digests[name] = body["metadata"]["annotations"][kj.A_PROGRESS_TOKEN]
        started = self.clock()
        try:
            await self._call(self.batch.create_namespaced_job, self.ns, body)
        except Exception as exc:
            code = status_of(exc)
            if code == 409:
                self._log("Job already exists: adopting it", a, job_name=name)
            else:
                reason = getattr(exc, "reason", None) or str(exc)
                raise LaunchError(f"cannot create Job {name}: {code or ''} {reason}".strip(),
                                  retryable=code != 422) from None
        k = kj.key_of(a.key)
        self._assignments[k] = a
        self._launched[k] = started
        self._live.add(k)
        self._log("Job created", a, job_name=name, node=a.node)
        return started

    async def wait(self, key: SliceKey) -> Outcome:
        self._loop = asyncio.get_running_loop()
        k = kj.key_of(key)
        name = kj.job_name(key)
        a = self._assignments.get(k)
        launched = self._launched.get(k, self.clock())
        ev = asyncio.Event()
        self._waiters.add(ev)
        try:
            while True:
                ev.clear()
                job = self.jobs.get(self.ns, name)
                if job is not None:
                    self._seen.add(name)
                elif (name not in self._seen and k not in self._stop_reasons
                      and self.clock() - launched <= self.cfg.pending_timeout_s):
                    # Not in the watch yet (just created): give it the pending timeout.
                    await self._sleep_until_change(ev)
                    continue
                outcome = kj.judge(job, self._pods_of(name), now=self.clock(),
                                   launched_at=launched,
                                   pending_timeout_s=self.cfg.pending_timeout_s,
                                   stop_reason=self._stop_reasons.get(k),
                                   max_runtime_s=a.max_runtime_s if a else None)
                if outcome is not None:
                    break
                await self._sleep_until_change(ev)
        finally:
            self._waiters.discard(ev)
        self._live.discard(k)
        if job is not None and outcome.exit_code is None and not outcome.killed:
            # Stuck pending (unschedulable, image pull): it must not start later.
            self._log("slice failed before it ran; deleting its Job", key,
                      level=logging.WARNING, reason=outcome.reason)
            try:
                await self._delete_job(name, foreground=True)
            except Exception as exc:  # the hub will order it killed again if it lingers
                self._log("could not delete Job", key, level=logging.WARNING, error=str(exc))
        return outcome

    async def _sleep_until_change(self, ev: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(ev.wait(), timeout=CHECK_S)
        except TimeoutError:
            pass  # re-check the pending timeout

    async def terminate(self, key: SliceKey, grace_s: float, reason: str) -> None:
        k = kj.key_of(key)
        self._stop_reasons.setdefault(k, reason)
        await self._archive(key)
        self._log("deleting Job", key, reason=reason)
        try:
            await self._delete_job(kj.job_name(key), foreground=True, grace_s=grace_s)
        except Exception as exc:
            # Never raise into the agent (it stops slices in loops): the Job's deadline is
            # no longer renewed (a stop reason is set), so it ends within a lease anyway,
            # and the hub orders the kill again while the slice is still reported.
            self._log("could not delete Job; its lease will stop it", key,
                      level=logging.WARNING, error=str(exc)[:200])
        self._wake()

    def progress(self, key: SliceKey) -> Progress | None:
        """What the workload last reported to the agent's progress endpoint."""
        if self.progress_endpoint is None:
            return None
        return self.progress_endpoint.get(kj.job_name(key))

    def listen_port(self, key: SliceKey) -> int | None:
        return None  # serving replicas on Kubernetes: a Service per replica, not yet built

    def capacity(self) -> list[NodeReport] | None:
        if not (self.nodes.synced.is_set() and self.pods.synced.is_set()):
            return []  # nothing offered until both lists arrived
        infos = [capa.node_info(n, self.cfg.gpu_resources) for n in self.nodes.items()]
        by_name = {n.name: n for n in infos}
        mine = [tuple(term.split("=", 1)) for term in kj.selector(self.cluster).split(",")]
        other: Counter[str] = Counter()
        for p in self.pods.items():
            labels = (p.get("metadata") or {}).get("labels") or {}
            node = (p.get("spec") or {}).get("nodeName")
            if all(labels.get(k) == v for k, v in mine):
                continue  # this spoke's own: counted by their assigned indices below
            info = by_name.get(node or "")
            if info is not None and info.resource and capa.pod_holds(p):
                other[info.name] += capa.pod_gpu_request(p, info.resource)
        own: dict[str, set[int]] = {}
        for k in self._live:
            a = self._assignments.get(k)
            if a is not None and k not in self._stop_reasons:
                own.setdefault(a.node, set()).update(a.gpus)
        return capa.reports(infos, other, own)

    async def discover(self) -> list[Found]:
        self._start_patrol()
        return await adopt.discover(self)

    async def release(self, key: SliceKey) -> None:
        k = kj.key_of(key)
        for d in (self._assignments, self._launched, self._stop_reasons):
            d.pop(k, None)
        self._live.discard(k)
        name = kj.job_name(key)
        self._digests.pop(name, None)
        if self.progress_endpoint is not None:
            self.progress_endpoint.forget(name)
        await self._archive(key)
        self._unreleased.add(name)
        await lease.delete_released(self)

    async def _archive(self, key: SliceKey) -> None:
        if self.log_dir is not None:
            pods = self._pods_of(kj.job_name(key))
            await podlog.archive(self.core, self.ns, pods, self.pool, self.log_dir, key)
            await asyncio.to_thread(podlog.prune, self.log_dir, self.log_retention_s)

    async def open_log(self, key: SliceKey, *, tail_lines: int | None, follow: bool) -> LogStream:
        archived = podlog.archive_file(self.log_dir, key) if self.log_dir else None
        return await podlog.open_pod_log(self.core, self.ns, self._pods_of(kj.job_name(key)),
                                         self.log_pool, archived, tail_lines=tail_lines,
                                         follow=follow)

    async def renew_lease(self, now: float) -> None:
        await lease.renew(self, now)

    async def close(self) -> None:
        if self._patrol is not None:
            self._patrol.cancel()
        if self.progress_endpoint is not None:
            await asyncio.to_thread(self.progress_endpoint.close)
        await asyncio.gather(*(asyncio.to_thread(r.stop) for r in (self.nodes, self.pods,
                                                                     self.jobs)))
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.log_pool.shutdown(wait=False, cancel_futures=True)
