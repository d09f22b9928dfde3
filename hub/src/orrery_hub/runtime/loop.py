"""The reconcile loop: woken by reports and submissions (or every interval), one pass
fails lost clusters and nodes, settles attempts of unknown fate, applies retention and
runtime limits, then plans and commits placements."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlmodel import Session, col, select

from orrery.cancellation import raise_if_cancelled
from orrery.wire import (
    Assignment,
    Kill,
    Prefetch,
)
from orrery_hub import reconcile
from orrery_hub.apply.queued import Gathered
from orrery_hub.apply.waits import Changed
from orrery_hub.datasets.orders import prefetch_orders
from orrery_hub.datasets.placement import data_policy, load_inputs, with_checkpoints
from orrery_hub.datasets.status import record_notes
from orrery_hub.runtime.inventory import ClusterView, Inventory, NodeTypes
from orrery_hub.runtime.orders import OrderOutbox
from orrery_hub.scheduler import Plan, Snapshot, plan
from orrery_hub.store.models import ClusterRow, JobRow
from orrery_hub.store.retention import RETENTION_EVERY_S, prune

log = logging.getLogger("orrery.hub")


# Wakes are coalesced: after a pass that took t, the next one waits PACING * t (at most
# the reconcile interval), so passes over a long queue take at most 1 / (1 + PACING) of
# the hub's time however fast submissions and reports wake it; a short queue's passes
# stay back to back.
PACING = 2.0


class ReconcileLoop(OrderOutbox):
    async def _reconcile_loop(self) -> None:
        interval = self.settings.reconcile_interval_s
        while True:
            raise_if_cancelled()
            try:
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            started = time.monotonic()
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("reconcile pass failed; retrying next tick")
            await asyncio.sleep(min(interval, PACING * (time.monotonic() - started)))

    async def _prune(self, now: float) -> None:
        """Retention: events and audit rows of long-finished jobs go, now and then."""
        days = self.settings.retention_days
        if not days or now - self._last_prune < RETENTION_EVERY_S:
            return
        self._last_prune = now
        pruned = await self.store.tx(lambda s: prune(s, now=now, keep_s=days * 86400))
        if pruned.jobs or pruned.events:
            log.info(
                "pruned old rows",
                extra={"jobs": pruned.jobs, "events": pruned.events, "audit": pruned.audit},
            )

    def _observe_plan(self, s: Session, p: Plan, now: float) -> None:
        """Preemptions, and each job's wait from submission to its first placement."""
        self.metrics.preemptions.inc(len(p.preemptions))
        placed = {pl.job for pl in p.placements}
        if not placed:
            return
        rows = s.exec(
            select(JobRow.created_at).where(
                col(JobRow.id).in_(placed), col(JobRow.started_at).is_(None)
            )
        ).all()
        for created in rows:
            self.metrics.placement_seconds.observe(max(0.0, now - created))

    async def reconcile_once(self) -> None:
        if not self.leading:
            return  # a standby: the leader schedules and watches the clusters
        now = self.clock()
        settings = self.settings
        if self._connected:
            for name in self.inventory.newly_lost(now, settings.timing.failover_timeout_s):
                log.warning("cluster lost", extra={"cluster": name})
                self.metrics.failovers.labels(name).inc()

                def lose(s: Session, name: str = name) -> reconcile.Outbox:
                    row = s.get(ClusterRow, name)
                    if row is not None:
                        row.state = "Lost"
                        s.add(row)
                    return reconcile.fail_cluster(s, name, now=now, settings=settings)

                await self._publish((await self.store.tx(lose)).orders)
            for cluster, nodes in self.inventory.nodes_lost(
                now, settings.timing.failover_timeout_s
            ).items():
                log.warning("nodes lost", extra={"cluster": cluster, "nodes": sorted(nodes)})

                def lose_nodes(
                    s: Session, c: str = cluster, n: set[str] = nodes
                ) -> reconcile.Outbox:
                    return reconcile.fail_nodes(s, c, n, now=now, settings=settings)

                await self._publish((await self.store.tx(lose_nodes)).orders)
        await self._prune(now)
        settled = await self.store.tx(
            lambda s: reconcile.settle_unknown(s, now=now, settings=settings)
        )
        await self._publish(settled.orders)
        if self._reload_requested:
            self._reload_requested = False
            await self.store.tx(lambda s: self.gate.reload(s, now=now))
        await self._enforce_runtime(now)
        frozen = [
            # The node list itself: never changed in place (a heartbeat replaces it), and
            # kept while unchanged, which lets the pass reuse its capacity (``memo``).
            (v.name, dict(v.labels), v.state, v.nodes, v.address)
            for v in self.inventory.clusters.values()
        ]
        addresses = {v[0]: v[4] for v in frozen}
        gpu_types = NodeTypes({v[0]: v[3] for v in frozen})
        facts = self._facts()
        gate, applier, jobdb = self.gate, self.applier, self.jobdb
        memo = self._capacity_memo  # used by one pass at a time, on its worker thread
        policies = gate.current
        # 1. The snapshot: the job database as it stands (no SQL), and the spend so far
        #    (cached; read from the store at most every few seconds).
        started = time.perf_counter()
        spend, history = await self.store.tx(
            lambda s: (gate.spend(s, jobdb, now), applier.history(s, now=now))
        )
        # What changed since the last pass, filed where the pass keeps what waits: a pass
        # with ten changes looks at ten jobs (``apply.pending``), not at the queue.
        pending = applier.pending
        changes = jobdb.drain()
        if changes is None:
            pending.load(jobdb.entries())
        else:
            pending.update(changes)
        holding = list(jobdb.holding.values())
        broken = dict(jobdb.broken)
        # Datasets, caches and checkpoints: what placement on data weighs.
        names = {n for ds in pending.reading.values() for n in ds}
        restarted = list(pending.restarted)
        data_in = await self.store.tx(lambda s: load_inputs(s, names, restarted))
        caches, notes = self.dataset_caches(), self.data_notes
        prefetched: dict[str, str] = self.data_prefetched
        prefetches: list[tuple[str, Prefetch]] = []

        # 2. Plan on a worker thread: the store thread stays free for heartbeats and
        #    submissions, whatever the pass costs.
        def decide() -> tuple[Gathered, Plan, Changed]:
            g = applier.gather(
                now=now, policies=policies, clusters=facts, spend=spend, broken=broken,
                holding=holding, policy=settings.scheduling, history=history,
            )
            requests = with_checkpoints(g.requests, data_in.checkpoints)
            # The kept order holds the requests as gathered: with a checkpoint's cluster
            # added to some, the pass sorts them itself.
            order = g.order if requests is g.requests else None
            inv = Inventory()
            for name, labels, state, nodes, address in frozen:
                inv.clusters[name] = ClusterView(
                    name=name,
                    labels=labels,
                    address=address,
                    executor="",
                    incarnation="",
                    last_seen=now,
                    state=state,
                    nodes=nodes,
                )
            p = plan(
                Snapshot(
                    clusters=inv.capacity(g.held, memo),
                    jobs=requests,
                    running=g.running,
                    queues=settings.queues,
                    policy=settings.scheduling,
                    runtime_history=history,
                    order=order,
                    data=data_policy(
                        data_in,
                        requests,
                        caches=caches,
                        clusters=facts,
                        policies=policies,
                        grace_s=settings.scheduling.grace_s,
                        kept=order,
                    ),
                ),
                now,
            )
            return g, p, applier.waits.note(p, g)

        g, p, reasons = await asyncio.to_thread(decide)

        # 3. One short commit: each job checked against the version the snapshot saw;
        #    what went stale is dropped (the next pass decides it again).
        def schedule(s: Session) -> list[tuple[str, Assignment | Kill]]:
            for job_id, exc in broken.items():
                jobdb.broken.pop(job_id, None)
                if job_id in g.versions:
                    applier.fail_unplaceable(s, job_id, exc, now=now)
            orders: list[tuple[str, Assignment | Kill]] = []
            orders += applier.commit(
                s,
                p,
                versions=g.versions,
                addresses=addresses,
                gpu_types=gpu_types,
                now=now,
                digest=policies.digest,
            )
            orders.extend(applier.preempt(s, p, now=now, digest=policies.digest))
            applier.waits.write(s, reasons)
            self._observe_plan(s, p, now)
            record_notes(s, p, notes, now=now)
            prefetches.extend(prefetch_orders(s, p, prefetched))
            return orders

        try:
            orders = await self.store.tx(schedule)
        except BaseException:
            applier.waits.unwritten(reasons)  # written again by the next pass
            raise
        self.metrics.pass_seconds.observe(time.perf_counter() - started)
        if orders:
            self.metrics.placements.inc(len(orders))
            for cluster, o in orders:
                log.info(
                    "assigned" if isinstance(o, Assignment) else "preempting",
                    extra={"job": o.job, "slice": o.index, "epoch": o.epoch, "cluster": cluster},
                )
        await self._publish([*orders, *prefetches])

    async def _enforce_runtime(self, now: float) -> None:
        """A running job past its max runtime (its own or a guardrail's) is stopped, Failed."""
        settings, gate, jobdb = self.settings, self.gate, self.jobdb

        def work(s: Session) -> reconcile.Outbox:
            out = reconcile.Outbox()
            for job_id, reason in gate.runtime_stops(s, jobdb, now):
                job = s.exec(select(JobRow).where(JobRow.id == job_id)).first()
                if job is not None:
                    reconcile.fail_job(s, job, reason, now, out, settings)
                    gate.audit(
                        s, at=now, kind="runtime", job_id=job_id, decision="stopped", detail=reason
                    )
            return out

        await self._publish((await self.store.tx(work)).orders)
