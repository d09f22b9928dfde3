"""The service controller: keeps each service's replica jobs at what the autoscaler wants.

Every ``TICK_S`` the controller, for each service:

1. takes one load sample: in flight at the gateways (summed over every gateway that
   reported lately, held requests included) and the replicas' own reports;
2. asks the pure autoscaler (``serving.autoscale.desired``) for a replica count;
3. reconciles: a replica job whose job ended is dropped (a new one replaces it); too few →
   submit replica jobs (placed by the same scheduler and policies as any job, at the
   service's priority, so they may preempt lower-priority batch); too many → cancel the
   least useful (not ready first, then the most crowded region);
4. rolls a changed template one surge replica at a time: one new-template replica is
   added; once a gateway finds it ready, one old-template replica is cancelled.

Spread: while a service covers fewer regions than ``spread.regions``, unplaced replicas
are kept off covered regions for up to ``SPREAD_PATIENCE_S`` (``avoid``, read by the applier).

Routes for the gateways come from here too: each replica's endpoint (its spoke reported
it in a heartbeat), cluster and region, marked stale when the cluster missed a heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlmodel import Session, select

from orrery.cancellation import raise_if_cancelled
from orrery.errors import Conflict, NotFound, OrreryError
from orrery.manifest import JobManifest
from orrery.resources import JobPublic
from orrery.service_manifest import ServiceManifest, replica_job
from orrery.service_resources import GatewayReport, Route, ServiceLoad
from orrery.wire import Heartbeat
from orrery_hub.serving.autoscale import Memory, Sample, desired
from orrery_hub.serving.readiness import counted_ready, forget_silent
from orrery_hub.serving.rows import ServiceRow

log = logging.getLogger("orrery.serving")
TICK_S = 0.25
WINDOW_S = 3600.0  # samples kept: the longest stable window or scale-down delay
BLOCKED_RETRY_S = 10.0
# Spread is a preference: a replica kept out of covered regions and unplaced this long may
# go anywhere (a residency policy may forbid every cluster "elsewhere"; only placement knows).
SPREAD_PATIENCE_S = 10.0
FINAL = frozenset({"Succeeded", "Failed", "Cancelled"})


class ClusterLike(Protocol):
    """A cluster as the inventory (``orrery_hub.runtime.inventory``) knows it."""

    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def state(self) -> str: ...
    @property
    def last_seen(self) -> float: ...


class InventoryLike(Protocol):
    @property
    def clusters(self) -> Mapping[str, ClusterLike]: ...


class HubPort(Protocol):
    """What the controller needs of the hub (``orrery_hub.main.Hub``)."""

    @property
    def inventory(self) -> InventoryLike: ...

    async def submit(self, manifest: JobManifest) -> JobPublic: ...
    async def cancel(self, job_id: str) -> JobPublic: ...
    async def get_job(self, job_id: str) -> JobPublic: ...
    def wake(self) -> None: ...


TxRunner = Callable[[Callable[[Session], Any]], Any]


@dataclass
class Endpoint:
    endpoint: str
    cluster: str
    epoch: int
    seen: float


@dataclass
class Replica:
    """One replica as this pass sees it."""

    index: int
    job: str
    template: str
    phase: str = "Pending"
    cluster: str | None = None
    region: str | None = None
    endpoint: str | None = None
    ready: bool = False  # a gateway found it ready
    load: dict[str, float] = field(default_factory=dict)


@dataclass
class ServiceState:
    """In memory only: rebuilt from gateway reports and heartbeats after a restart."""

    samples: deque[Sample] = field(default_factory=deque)
    memory: Memory = field(default_factory=Memory)
    gateways: dict[str, tuple[float, float, ServiceLoad]] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)  # job -> last seen ready
    heard: bool = False  # a gateway has reported on this service since this hub started
    replicas: list[Replica] = field(default_factory=list)
    desired: int = 0
    reason: str = ""
    panic: bool = False
    cold_start_s: float | None = None
    latency_p95_s: float | None = None
    requests_per_s: float = 0.0
    blocked_until: float = 0.0  # a replica was refused (policy, budget): try again then


class ServiceController:
    def __init__(
        self,
        hub: HubPort,
        tx: TxRunner,
        *,
        clock: Callable[[], float],
        heartbeat_s: float,
    ) -> None:
        self.hub = hub
        self.tx = tx
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self.state: dict[str, ServiceState] = {}
        self.endpoints: dict[str, Endpoint] = {}  # replica job id -> where it listens
        # (service, replica index) -> clusters to keep that replica's job off
        self.avoid: dict[tuple[str, str], frozenset[str]] = {}
        self.avoid_since: dict[tuple[str, str], float] = {}

    # ---- inputs ---------------------------------------------------------------------------

    def observe(self, hb: Heartbeat, now: float) -> None:
        """A heartbeat: where the replicas on that cluster listen."""
        for sl in hb.slices:
            if sl.endpoint is not None and not sl.phase.terminal:
                self.endpoints[sl.job] = Endpoint(sl.endpoint, hb.cluster, sl.epoch, now)
            elif sl.phase.terminal:
                cur = self.endpoints.get(sl.job)
                if cur is not None and cur.epoch <= sl.epoch:
                    del self.endpoints[sl.job]

    def gateway_report(self, report: GatewayReport, now: float) -> None:
        for load in report.services:
            st = self.state.get(load.name)
            if st is None:
                continue
            st.gateways[report.gateway] = (now, report.interval_s, load)
            st.heard = True
            if load.cold_start_s is not None:
                st.cold_start_s = load.cold_start_s
            for r in load.replicas:
                if r.ready:
                    st.ready_at[r.job] = now

    # ---- the loop --------------------------------------------------------------------------

    # Whether this hub acts on services (hub standby: only the leader does).
    acting: Callable[[], bool] = staticmethod(lambda: True)

    async def run(self) -> None:
        while True:
            raise_if_cancelled()
            try:
                if self.acting():
                    await self.tick(self.clock())
            except OrreryError as exc:
                log.warning("service controller: %s", exc.message)
            await asyncio.sleep(TICK_S)

    async def tick(self, now: float) -> None:
        rows: list[ServiceRow] = await self.tx(lambda s: list(s.exec(select(ServiceRow))))
        for gone in [n for n in self.state if n not in {r.name for r in rows}]:
            del self.state[gone]
        for row in rows:
            await self._one(row, now)

    def _sample(self, st: ServiceState, reps: list[Replica], now: float) -> Sample:
        concurrency, requests, rate, p95 = 0.0, 0, 0.0, None
        for _, interval, load in st.gateways.values():
            concurrency += load.concurrency + load.held
            requests += load.requests + load.held
            rate += load.requests / interval
            if load.latency_p95_s is not None:
                p95 = max(p95 or 0.0, load.latency_p95_s)
        st.requests_per_s, st.latency_p95_s = rate, p95

        def mean(key: str) -> float | None:
            vals = [r.load[key] for r in reps if key in r.load and r.ready]
            return sum(vals) / len(vals) if vals else None

        return Sample(
            t=now,
            concurrency=concurrency,
            queue_depth=mean("load.queueDepth"),
            kv_cache=mean("load.kvCache"),
            ttft_p95=mean("load.ttftP95"),
            requests=requests,
        )

    async def _replicas(self, row: ServiceRow, st: ServiceState, now: float) -> list[Replica]:
        forget_silent(st.gateways, now)
        out = []
        for entry in row.replicas:
            r = Replica(
                index=int(entry["index"]), job=str(entry["job"]), template=str(entry["template"])
            )
            try:
                job = await self.hub.get_job(r.job)
            except NotFound:
                r.phase = "Cancelled"
                out.append(r)
                continue
            r.phase = job.status.phase
            sl = job.status.slices[0] if job.status.slices else None
            if sl is not None:
                r.cluster = sl.cluster
                if sl.progress:
                    metrics = sl.progress.get("metrics") or {}
                    r.load = {k: float(v) for k, v in metrics.items() if k.startswith("load.")}
            ep = self.endpoints.get(r.job)
            if r.phase == "Running" and ep is not None:
                r.endpoint, r.cluster = ep.endpoint, ep.cluster
            view = self.hub.inventory.clusters.get(r.cluster or "")
            r.region = view.labels.get("region") if view is not None else None
            seen = st.ready_at.get(r.job)
            r.ready = counted_ready(r.endpoint is not None, seen, bool(st.gateways), now)
            if r.ready and not st.heard:
                # Believed as a gateway's "ready" is: a gateway that starts reporting this
                # service has not probed its replicas yet, and must not take them out.
                st.ready_at[r.job] = now
            out.append(r)
        listed = {r.job for r in out}
        for gone in [j for j in st.ready_at if j not in listed]:
            del st.ready_at[gone]  # replicas gone: their last "ready" with them
        return out

    async def _one(self, row: ServiceRow, now: float) -> None:
        svc = ServiceManifest.model_validate(row.manifest)
        st = self.state.setdefault(row.name, ServiceState())
        reps = await self._replicas(row, st, now)
        live = [r for r in reps if r.phase not in FINAL]
        st.samples.append(self._sample(st, live, now))
        while st.samples and st.samples[0].t < now - WINDOW_S:
            st.samples.popleft()
        spec = svc.spec
        current = [r for r in live if r.template == row.template]
        d = desired(spec.autoscale, spec.replicas, st.samples, len(current), now, st.memory)
        st.memory, st.desired, st.reason, st.panic = d.memory, d.replicas, d.reason, d.panic
        st.replicas = live

        add, cancel = plan_replicas(live, row.template, d.replicas)
        keep = [r for r in live if r not in cancel]
        if now < st.blocked_until:
            add = 0
        # Before the jobs exist: the scheduler may take them in the very next pass.
        self._spread(svc, keep, list(range(row.next_index, row.next_index + add)), now)
        created = []
        if add:
            try:
                for _ in range(add):
                    created.append(await self._create(svc, row))
                st.blocked_until = 0.0
            except OrreryError as exc:  # Forbidden by a policy, over a budget, ...
                st.reason = f"cannot add a replica: {exc.message}"
                st.blocked_until = now + BLOCKED_RETRY_S
        for r in cancel:
            try:
                await self.hub.cancel(r.job)
            except (NotFound, Conflict):
                pass
        entries: list[dict[str, Any]] = [
            {"index": r.index, "job": r.job, "template": r.template} for r in keep
        ]
        entries += created
        if entries != row.replicas or d.replicas != row.desired:
            next_index = max([row.next_index, *[int(e["index"]) + 1 for e in entries]])
            await self.tx(lambda s: _save(s, row.name, entries, next_index, d.replicas))
        if created or cancel:
            self.hub.wake()

    async def _create(self, svc: ServiceManifest, row: ServiceRow) -> dict[str, Any]:
        index = row.next_index
        row.next_index += 1
        name = f"{svc.name[:50]}-r{index}"
        job = await self.hub.submit(replica_job(svc, index, job_name=name))
        log.info("service replica added", extra={"service": svc.name, "job": job.id})
        return {"index": index, "job": job.id, "template": row.template}

    def _spread(
        self, svc: ServiceManifest, keep: list[Replica], new: list[int], now: float
    ) -> None:
        """Keep unplaced replicas out of covered regions while fewer than ``spread.regions``
        are covered; keyed by (service, replica index), so it holds from submission on."""
        want = svc.spec.spread.regions
        placed_regions = {r.region for r in keep if r.cluster and r.region}
        pending = [r.index for r in keep if r.cluster is None] + new
        for key in [(svc.name, str(r.index)) for r in keep if r.cluster is not None]:
            self.avoid.pop(key, None)
            self.avoid_since.pop(key, None)
        unmet = want > 1 and len(placed_regions) < want and len(keep) + len(new) >= 2
        elsewhere = any(
            v.state == "Ready" and v.labels.get("region") not in placed_regions
            for v in self.hub.inventory.clusters.values()
        )
        crowded = frozenset(
            name
            for name, v in self.hub.inventory.clusters.items()
            if v.labels.get("region") in placed_regions
        )
        everywhere = frozenset(self.hub.inventory.clusters)
        for i, index in enumerate(pending):
            key = (svc.name, str(index))
            if not (unmet and elsewhere):
                self.avoid.pop(key, None)
                self.avoid_since.pop(key, None)
            elif now - self.avoid_since.setdefault(key, now) >= SPREAD_PATIENCE_S:
                self.avoid.pop(key, None)  # kept out long enough: wherever it fits
            elif i == 0:
                self.avoid[key] = crowded
            else:
                # Placed in one pass, they could all land in one region: one at a time
                # until the spread is met, each kept out of the regions taken before it.
                self.avoid[key] = everywhere

    def routes(self, name: str, now: float) -> list[Route]:
        st = self.state.get(name)
        out = []
        for r in st.replicas if st is not None else []:
            if r.endpoint is None or r.cluster is None or r.phase != "Running":
                continue
            view = self.hub.inventory.clusters.get(r.cluster)
            stale = (
                view is None
                or view.state != "Ready"
                or (now - view.last_seen > 2 * self.heartbeat_s + 0.5)
            )
            out.append(
                Route(
                    job=r.job, endpoint=r.endpoint, cluster=r.cluster, region=r.region, stale=stale
                )
            )
        return out


def plan_replicas(live: list[Replica], template: str, want: int) -> tuple[int, list[Replica]]:
    """(replicas to add, replicas to cancel) to reach ``want`` replicas of ``template``,
    rolling old-template ones out one surge replica at a time."""
    new = [r for r in live if r.template == template]
    old = [r for r in live if r.template != template]
    if old:
        new_ready = [r for r in new if r.ready]
        starting = [r for r in new if not r.ready]
        if starting:
            return 0, []  # the surge replica is not ready yet: wait (readiness-gated)
        if len(new_ready) >= want:
            return 0, _least_useful(old, len(old))  # enough new ones: the rest of the old go
        if new_ready and len(new_ready) + len(old) > want:
            return 0, _least_useful(old, 1)  # a new one is ready: one old one goes
        return 1, []  # one surge replica of the new template
    if len(new) < want:
        return want - len(new), []
    if len(new) > want:
        return 0, _least_useful(new, len(new) - want)
    return 0, []


def _least_useful(reps: list[Replica], n: int) -> list[Replica]:
    """Not ready first, then from the region with the most replicas, newest first."""
    per_region: dict[str | None, int] = {}
    for r in reps:
        per_region[r.region] = per_region.get(r.region, 0) + 1
    order = sorted(reps, key=lambda r: (r.ready, -per_region[r.region], -r.index))
    return order[:n]


def _save(s: Session, name: str, entries: list[dict[str, Any]], next_index: int, want: int) -> None:
    row = s.get(ServiceRow, name)
    if row is None:
        return  # deleted meanwhile
    row.replicas = entries
    row.next_index = next_index
    row.desired = want
    s.add(row)
