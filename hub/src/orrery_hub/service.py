"""The running hub: NATS in and out, the reconcile loop, the API server — all supervised.

``Hub.run()`` starts every task in one ``asyncio.TaskGroup``: if any of them fails, the
others are cancelled and the error surfaces, rather than a loop dying silently. Handlers
of single messages, on the other hand, log and drop what they cannot handle (a malformed
report must never take the hub down).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import uvicorn
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from sqlmodel import Session, col, select

from orrery import natsconnect
from orrery.errors import Forbidden, InvalidInput, Unavailable
from orrery.manifest import JobManifest
from orrery.natsserver import NatsServer, free_port
from orrery.resources import ClusterPublic, JobPublic
from orrery.wire import (
    Assignment,
    Heartbeat,
    HeartbeatAck,
    Kill,
    SliceKey,
    SliceStatus,
    Subjects,
    encode,
)
from orrery.wire.codec import WireError, decode_any
from orrery.wire.signing import sign
from orrery_hub import reconcile
from orrery_hub.admission import check_deliverable
from orrery_hub.applier import Applier
from orrery_hub.auth import Authenticator, Principal, bootstrap_admin
from orrery_hub.auth.ratelimit import RateLimiter
from orrery_hub.gate import ClusterShape, PolicyGate, cluster_facts
from orrery_hub.identity import files as identity_files
from orrery_hub.identity.natsconf import HUB_INBOX
from orrery_hub.identity.service import ClusterIdentity
from orrery_hub.identity.service import audit as audit_cluster
from orrery_hub.intake import Lanes
from orrery_hub.inventory import ClusterView, Inventory
from orrery_hub.metrics import HubMetrics
from orrery_hub.orderkey import load_or_create_order_key
from orrery_hub.scheduler import Plan, Snapshot, plan
from orrery_hub.settings import HubSettings
from orrery_hub.store import Database
from orrery_hub.store import jobs as jobstore
from orrery_hub.store.models import ClusterRow, JobRow
from orrery_hub.store.retention import RETENTION_EVERY_S, prune
from orrery_hub.storerunner import StoreRunner

log = logging.getLogger("orrery.hub")


@dataclass(frozen=True)
class Endpoints:
    api_url: str
    nats_url: str


class Hub:
    def __init__(self, settings: HubSettings, *, clock: Callable[[], float] = time.time) -> None:
        settings.check()
        self.settings = settings
        self.clock = clock
        self.inventory = Inventory()
        self.metrics = HubMetrics()
        # Policies first: a bad set refuses the start before anything is opened.
        self.gate = PolicyGate(settings.policies_dir)
        self.applier = Applier()
        self.store = StoreRunner(Database.connect(settings.database_url))
        from orrery_hub.auth.oidc import OidcVerifier

        self._denial_audit = RateLimiter(rate=5.0, burst=50)
        self.auth = Authenticator(
            self.store,
            admin_token=settings.admin_token,
            clock=clock,
            verifiers=(OidcVerifier(settings.oidc),) if settings.oidc else (),
        )
        self._reload_requested = False
        # Secure mode: the CA, enrollments, and nats-server's users kept in step with them.
        self.identity: ClusterIdentity | None = None
        if not settings.insecure:
            self.identity = ClusterIdentity(
                identity_files.IdentityPaths.under(
                    settings.state_dir, ca_cert=settings.ca_cert, ca_key=settings.ca_key
                ),
                manage_nats=settings.manage_nats or settings.nats_url is None,
                require_approval=settings.require_approval,
                cert_ttl_s=settings.cert_ttl_s,
                create_ca=settings.ca_cert is None,
            )
        self.nc: NATS | None = None
        self.nats_url: str | None = None
        self._nats_server: NatsServer | None = None
        self._wake = asyncio.Event()
        # Spokes refuse an order they have seen: seq must never repeat, across restarts too.
        self._seq = itertools.count(int(time.time() * 1_000_000))
        self.order_key = load_or_create_order_key(settings.state_dir)
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._connected = False
        self.endpoints: Endpoints | None = None
        self._last_persist: dict[str, float] = {}
        self._last_prune = 0.0
        self._last_free: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
        # Reports are processed per cluster, off the NATS callback (see ``intake``); what
        # the last processed report let a spoke forget is what a hurried reply carries.
        self.lanes: Lanes[list[SliceKey]] = Lanes()
        self._forget: dict[str, list[SliceKey]] = {}
        self._answering: set[asyncio.Task[None]] = set()

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self, *, on_ready: Callable[[Endpoints], None] | None = None) -> None:
        s = self.settings
        nats_url = s.nats_url
        if self.identity is not None:
            # Users first, so the server (ours or the federation's) knows every enrolled cluster.
            await self.identity.restore(self.store)
        if nats_url is None:
            s.state_dir.mkdir(parents=True, exist_ok=True)
            conf = None
            port = free_port()
            if self.identity is not None:
                conf = identity_files.write_nats_conf(
                    self.identity.paths, host="127.0.0.1", port=port
                )
            self._nats_server = NatsServer(
                port=port, log_file=s.state_dir / "nats-server.log", config=conf
            ).start()
            nats_url = self._nats_server.url
        self.nats_url = nats_url
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # uvicorn's h11 protocol writes headers and body separately; with Nagle on, each
        # response waits ~40 ms for the client's delayed ACK. Accepted sockets inherit this.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((s.host, s.port))
        except OSError as exc:
            # The nats-server started above is ours: a failed start must not orphan it.
            sock.close()
            if self._nats_server:
                self._nats_server.stop()
            raise Unavailable(
                f"--port: cannot listen on {s.host}:{s.port}: {exc.strerror}"
            ) from None
        port = sock.getsockname()[1]
        try:
            await self._restore()
            if s.admin_token is None:
                written = await self.store.tx(
                    lambda db: bootstrap_admin(db, s.state_dir, self.clock())
                )
                if written is not None:
                    log.warning("created an admin API token", extra={"path": str(written)})
            await self._connect(nats_url)
            if self.identity is not None and not self.identity.manage_nats:
                await self._check_external_nats(nats_url)
            from orrery_hub.api.app import create_app

            app = create_app(self)
            tls: dict[str, str] = {}
            if s.tls_cert is not None and s.tls_key is not None:
                tls = {"ssl_certfile": str(s.tls_cert), "ssl_keyfile": str(s.tls_key)}
            config = uvicorn.Config(
                app,
                log_level="warning",
                lifespan="off",
                access_log=False,
                **tls,  # type: ignore[arg-type]
            )
            server = uvicorn.Server(config)
            scheme = "https" if tls else "http"
            self.endpoints = Endpoints(f"{scheme}://{s.host}:{port}", nats_url)
            async with asyncio.TaskGroup() as tg:
                serving = tg.create_task(server.serve(sockets=[sock]), name="api")
                loop_task = tg.create_task(self._reconcile_loop(), name="reconcile")
                while not server.started:
                    if serving.done():
                        break  # it failed: the TaskGroup raises why
                    await asyncio.sleep(0.01)
                self._ready.set()
                log.info("hub ready", extra={"api": self.endpoints.api_url, "nats": nats_url})
                if on_ready:
                    on_ready(self.endpoints)
                try:
                    await self._stopping.wait()
                finally:
                    # Stop the way uvicorn expects (it closes its listener); cancelling
                    # its task instead would leave the socket accepting into the void.
                    server.should_exit = True
                    loop_task.cancel()
        finally:
            sock.close()
            if self.nc is not None and not self.nc.is_closed:
                await self.nc.close()
            for t in list(self._answering):
                t.cancel()
            await self.lanes.close()
            self.store.close()
            if self._nats_server:
                self._nats_server.stop()

    async def _check_external_nats(self, url: str) -> None:
        """A NATS the hub did not start must refuse anonymous clients (docs/security.md)."""
        assert self.identity is not None
        if await self.identity.anonymous_allowed(url, self.settings.nats_ca):
            log.error(
                "SECURITY: the NATS server lets clients in without a certificate: anyone who "
                "reaches it can forge reports and read orders. Apply the server configuration "
                "in docs/security.md, or run the hub with --insecure for development only.",
                extra={"nats": url},
            )
            raise InvalidInput(
                f"--nats: {url} accepts anonymous clients; configure it as docs/security.md "
                "says (or --insecure, for development only)"
            )

    async def _restore(self) -> None:
        now = self.clock()

        def load(s: Session) -> list[ClusterView]:
            from orrery.wire import NodeReport

            return [
                ClusterView(
                    name=c.name,
                    labels=dict(c.labels),
                    address=c.address,
                    executor=c.executor,
                    incarnation=c.incarnation or "",
                    last_seen=now,
                    state="Ready",
                    nodes=[NodeReport.model_validate(n) for n in c.nodes],
                )
                for c in s.exec(select(ClusterRow))
            ]

        # Every known cluster gets a full failover timeout to report before it counts as Lost.
        self.inventory.restore(await self.store.tx(load), now)

    async def _connect(self, url: str) -> None:
        async def disconnected() -> None:
            self._connected = False
            log.warning("hub lost NATS; failover detection paused")

        async def reconnected() -> None:
            self._connected = True
            self.inventory.grace(self.clock())
            log.info("hub reconnected to NATS; every cluster gets a fresh grace period")

        tls = None
        if self.identity is not None:
            tls = self.identity.client_tls(
                self.settings.nats_ca, self.settings.nats_cert, self.settings.nats_key
            )
        self.nc = await natsconnect.connect(
            url,
            name="orrery-hub",
            retry=natsconnect.Retry(give_up_after_s=30, max_wait_s=2),
            tls=tls,
            inbox_prefix=HUB_INBOX if tls is not None else None,
            on_disconnect=disconnected,
            on_reconnect=reconnected,
        )
        self._connected = True
        assert self.nc is not None
        await self.nc.subscribe(Subjects.ALL_REPORTS, cb=self._on_report)

    def wake(self) -> None:
        self._wake.set()

    def request_reload(self) -> None:
        """SIGHUP: reload the policy files at the next pass (on the store thread)."""
        self._reload_requested = True
        self.wake()

    def _shapes(self) -> tuple[ClusterShape, ...]:
        return tuple(
            ClusterShape(v.name, dict(v.labels), tuple(v.nodes))
            for v in self.inventory.clusters.values()
            if v.state == "Ready"
        )

    def stop(self) -> None:
        """Ask ``run()`` to finish: the API stops serving, loops end, NATS closes."""
        self._stopping.set()

    # ---- messages in -----------------------------------------------------------------

    async def _on_report(self, msg: Msg) -> None:
        if msg.subject.endswith(".report.renew"):
            self._background(self._on_renew(msg))  # it signs and writes: off this callback
            return
        try:
            m = decode_any(msg.data)
        except WireError as exc:
            self.metrics.bad_messages.inc()
            log.warning(
                "dropped invalid message", extra={"subject": msg.subject, "error": str(exc)}
            )
            return
        cluster = Subjects.cluster_of(msg.subject)
        if isinstance(m, Heartbeat | SliceStatus) and m.cluster != cluster:
            self.metrics.bad_messages.inc()
            log.warning("dropped report: subject names %s, message names %s", cluster, m.cluster)
            return
        try:
            if isinstance(m, Heartbeat):
                await self._on_heartbeat(m, msg)
            elif isinstance(m, SliceStatus):
                if self.identity is not None and not self.identity.accepts(m.cluster):
                    self.metrics.bad_messages.inc()
                    return
                self._on_status(m)
            else:
                self.metrics.bad_messages.inc()
                log.warning("dropped %s on a report subject", m.kind)
        except Exception:
            # One report failing must not stop the next; the next heartbeat retries it.
            log.exception("handling a report failed", extra={"cluster": cluster})

    async def _on_heartbeat(self, hb: Heartbeat, msg: Msg) -> None:
        """Queue the heartbeat on its cluster's lane and answer it within the ack bound.

        Nothing here waits for the store: this runs on the one callback all reports share."""
        now = self.clock()
        self.metrics.heartbeats.inc()
        t = self.settings.timing
        if hb.lease_s + t.kill_grace_s + t.max_clock_drift_s >= t.failover_timeout_s:
            # Its slices could outlive the moment this hub places them elsewhere: refuse it.
            reason = (
                f"lease {hb.lease_s}s + kill grace {t.kill_grace_s}s + clock drift "
                f"{t.max_clock_drift_s}s must stay below the hub's failover timeout "
                f"{t.failover_timeout_s}s; restart the spoke with a shorter --lease"
            )
            log.error("refused spoke", extra={"cluster": hb.cluster, "reason": reason})
            await msg.respond(
                encode(
                    HeartbeatAck(sender="hub", seq=next(self._seq), accepted=False, reason=reason)
                )
            )
            return
        if self.identity is not None:
            refused, enrolled = self.identity.check(hb)
            if self.identity.should_audit(hb.cluster, refused):
                log.error("refused heartbeat", extra={"cluster": hb.cluster, "reason": refused})
                why = refused

                async def record() -> None:
                    await self.store.tx(
                        lambda s: audit_cluster(
                            s,
                            at=now,
                            kind="cluster",
                            cluster=hb.cluster,
                            decision="refused",
                            detail=f"heartbeat refused: {why}",
                        )
                    )

                # Never wait for the store on the shared report callback.
                self._background(record())
            if refused is not None:
                self.metrics.bad_messages.inc()
                await msg.respond(
                    encode(
                        HeartbeatAck(
                            sender="hub", seq=next(self._seq), accepted=False, reason=refused
                        )
                    )
                )
                return
            # The labels policies see are the ones the admin bound at enrollment.
            hb = hb.model_copy(update={"labels": enrolled})
        view = self.inventory.clusters.get(hb.cluster)
        known = view is not None
        came_back = view is not None and view.state == "Lost"
        persist = (
            not known
            or came_back
            or now - self._last_persist.get(hb.cluster, 0) > 5
            or self._last_free.get(hb.cluster) is None
        )
        free = [(n.name, tuple(n.free)) for n in hb.nodes]
        capacity_changed = self._last_free.get(hb.cluster) != free
        self._last_free[hb.cluster] = free
        if persist or capacity_changed:
            self._last_persist[hb.cluster] = now
        settings = self.settings

        def work(s: Session) -> reconcile.Outbox:
            if persist or capacity_changed:
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
                if not known:
                    jobstore.add_event(
                        s,
                        at=now,
                        kind="ClusterJoined",
                        cluster=hb.cluster,
                        message=f"{hb.cluster} joined with {len(hb.nodes)} node(s)",
                    )
            return reconcile.apply_reports(
                s,
                cluster=hb.cluster,
                incarnation=hb.incarnation,
                seq=hb.seq,
                reports=list(hb.slices),
                complete=True,
                now=now,
                settings=settings,
                lease_s=hb.lease_s,
            )

        async def process() -> list[SliceKey]:
            out = await self.store.tx(work)
            self._forget[hb.cluster] = list(out.forget)
            await self._publish(out.orders)
            if out.changed or capacity_changed or not known or came_back:
                self.wake()
            return out.forget

        done = self.lanes.submit(hb.cluster, process, coalesce=True)
        task = asyncio.create_task(self._answer(hb, msg, done, now))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(
        self, hb: Heartbeat, msg: Msg, done: asyncio.Future[list[SliceKey] | None], arrived: float
    ) -> None:
        """Reply once the heartbeat is processed, or after ``ack_wait_s`` whatever happens:
        the reply renews the spoke's lease, so it must never wait behind a long pass."""
        forget: list[SliceKey] | None = None
        try:
            forget = await asyncio.wait_for(
                asyncio.shield(done), timeout=self.settings.timing.ack_wait_s
            )
        except TimeoutError:
            pass
        if forget is None:  # not processed yet (or superseded, or failed)
            forget = self._forget.get(hb.cluster, [])
        ack = HeartbeatAck(sender="hub", seq=next(self._seq), forget=forget)
        try:
            await msg.respond(encode(ack))
        except Exception as exc:
            log.warning(
                "could not answer heartbeat", extra={"cluster": hb.cluster, "error": str(exc)}
            )
            return  # not acknowledged: the cluster is not counted as heard from
        self.metrics.ack_seconds.observe(max(0.0, self.clock() - arrived))
        view = self.inventory.clusters.get(hb.cluster)
        if view is not None and view.state == "Ready" and arrived < view.last_seen:
            return  # a newer heartbeat was answered first
        # Ready in /v1/clusters, and its failover clock restarted, only once acknowledged.
        _, came_back = self.inventory.observe(hb, arrived)
        if came_back:
            log.info("cluster back", extra={"cluster": hb.cluster})

    async def _on_renew(self, msg: Msg) -> None:
        """A cluster asks for a new certificate. Only that cluster can publish on its own
        report subjects (nats-server enforces it), so the subject names who asks."""
        cluster = Subjects.cluster_of(msg.subject)
        if self.identity is None or cluster is None or not msg.reply:
            return
        try:
            body = json.loads(msg.data)
            pem = await self.identity.renew(
                self.store, cluster=cluster, csr_pem=str(body["csr"]).encode(), now=self.clock()
            )
            reply = {"certificate": pem.decode()}
            log.info("certificate renewed", extra={"cluster": cluster})
        except Exception as exc:  # a bad request gets a reason, never a stack
            reason = getattr(exc, "message", None) or f"bad renewal request: {type(exc).__name__}"
            log.warning("renewal refused", extra={"cluster": cluster, "reason": reason})
            reply = {"error": reason}
        await msg.respond(json.dumps(reply).encode())

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    def _on_status(self, st: SliceStatus) -> None:
        now = self.clock()
        settings = self.settings
        view = self.inventory.clusters.get(st.cluster)
        lease = view.lease_s if view is not None else None

        async def process() -> list[SliceKey]:
            out = await self.store.tx(
                lambda s: reconcile.apply_reports(
                    s,
                    cluster=st.cluster,
                    incarnation=st.incarnation,
                    seq=st.seq,
                    reports=[st.slice],
                    complete=False,
                    now=now,
                    settings=settings,
                    lease_s=lease,
                )
            )
            await self._publish(out.orders)
            if out.changed:
                self.wake()
            return out.forget

        self.lanes.submit(st.cluster, process)

    # ---- orders out ------------------------------------------------------------------

    async def _publish(self, orders: list[tuple[str, Assignment | Kill]]) -> None:
        if not orders or self.nc is None:
            return
        failed = 0
        for cluster, order in orders:
            # Each order on its own: one that cannot go (too large, NATS down) never keeps
            # the rest of the batch from their spokes. The next heartbeat resends it.
            try:
                stamped = self.stamp(order)
                await self.nc.publish(Subjects(cluster).orders, encode(stamped))
                self.metrics.orders.labels(order.kind).inc()
            except Exception as exc:
                failed += 1
                log.warning(
                    "could not publish order",
                    extra={
                        "cluster": cluster,
                        "job": order.job,
                        "slice": order.index,
                        "epoch": order.epoch,
                        "error": str(exc)[:500],
                    },
                )
        if failed == len(orders):
            return
        try:
            await self.nc.flush(timeout=1)
        except Exception:
            pass  # buffered; sent on reconnect or repaired by the next heartbeat

    def stamp(self, order: Assignment | Kill) -> Assignment | Kill:
        """The order as sent: a fresh seq, an expiry, the hub's signature over them all."""
        # Wall time, not self.clock: a spoke judges the expiry by its own wall clock.
        expires = time.time() + self.settings.order_ttl
        return sign(
            order.model_copy(update={"seq": next(self._seq), "expires_at": expires}),
            self.order_key,
        )

    # ---- the reconcile loop ----------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        interval = self.settings.reconcile_interval_s
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("reconcile pass failed; retrying next tick")

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
            (v.name, dict(v.labels), v.state, list(v.nodes), v.address)
            for v in self.inventory.clusters.values()
        ]
        addresses = {v[0]: v[4] for v in frozen}
        gpu_types = {(v[0], n.name): n.gpu_type for v in frozen for n in v[3]}
        facts = cluster_facts(self._shapes())
        gate, applier = self.gate, self.applier

        def schedule(s: Session) -> list[tuple[str, Assignment | Kill]]:
            started = time.perf_counter()
            policies = gate.current
            g = applier.gather(
                s, now=now, policies=policies, clusters=facts, spend=gate.spend(s, applier, now)
            )
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
                    clusters=inv.capacity(g.held),
                    jobs=g.requests,
                    running=g.running,
                    queues=settings.queues,
                    policy=settings.scheduling,
                ),
                now,
            )
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
            applier.record_waiting(s, p, g)
            self._observe_plan(s, p, now)
            self.metrics.pass_seconds.observe(time.perf_counter() - started)
            return orders

        orders = await self.store.tx(schedule)
        if orders:
            self.metrics.placements.inc(len(orders))
            for cluster, o in orders:
                log.info(
                    "assigned" if isinstance(o, Assignment) else "preempting",
                    extra={"job": o.job, "slice": o.index, "epoch": o.epoch, "cluster": cluster},
                )
        await self._publish(list(orders))

    async def _enforce_runtime(self, now: float) -> None:
        """A running job past its max runtime (its own or a guardrail's) is stopped, Failed."""
        settings, gate, applier = self.settings, self.gate, self.applier

        def work(s: Session) -> reconcile.Outbox:
            out = reconcile.Outbox()
            for job_id, reason in gate.runtime_stops(s, applier, now):
                job = s.exec(select(JobRow).where(JobRow.id == job_id)).first()
                if job is not None:
                    reconcile.fail_job(s, job, reason, now, out, settings)
                    gate.audit(
                        s, at=now, kind="runtime", job_id=job_id, decision="stopped", detail=reason
                    )
            return out

        await self._publish((await self.store.tx(work)).orders)

    # ---- what the API calls ----------------------------------------------------------

    async def submit(self, manifest: JobManifest) -> JobPublic:
        check_deliverable(manifest)  # a job that could never be sent is a 422 now
        now = self.clock()
        root = self.settings.checkpoints

        gate, applier = self.gate, self.applier
        facts = cluster_facts(self._shapes())

        def work(s: Session) -> JobPublic:
            verdict = gate.admit(s, applier, manifest, now=now, clusters=facts)  # or Forbidden
            job = jobstore.submit(s, manifest, now=now, checkpoint_root=root)
            names = [policy for policy, _ in (*verdict.denials, *verdict.holds)]
            if verdict.decision == "held":
                job.reason = f"held: {verdict.message()}"
                job.waiting = {"": job.reason}
                s.add(job)
            gate.audit(
                s,
                at=now,
                kind="admit",
                job_id=job.id,
                decision=verdict.decision,
                detail=verdict.message() if names else f"estimated cost {verdict.estimate.text()}",
                policies=names,
            )
            return jobstore.view(job, jobstore.slices_of(s, job.id))

        try:
            out = await self.store.tx(work)
        except Forbidden:
            self.metrics.jobs_denied.inc()
            self.metrics.admissions.labels("denied").inc()
            raise
        self.metrics.jobs_submitted.inc()
        self.metrics.admissions.labels("admitted").inc()
        self.wake()
        return out

    async def get_job(self, job_id: str) -> JobPublic:
        return await self.store.tx(lambda s: jobstore.get(s, job_id))

    async def list_jobs(
        self, phase: str | None, limit: int, *, team: str | None = None
    ) -> list[JobPublic]:
        return await self.store.tx(
            lambda s: jobstore.list_jobs(s, phase=phase, limit=limit, team=team)
        )

    async def cancel(self, job_id: str) -> JobPublic:
        now = self.clock()
        grace = self.settings.timing.kill_grace_s

        def work(s: Session) -> tuple[JobPublic, list[tuple[str, Assignment | Kill]]]:
            open_attempts = jobstore.cancel(s, job_id, now=now)
            kills: list[tuple[str, Assignment | Kill]] = [
                reconcile.kill_order(a.cluster, a.job_id, a.index, a.epoch, "cancelled", grace)
                for a in open_attempts
            ]
            return jobstore.get(s, job_id), kills

        view, kills = await self.store.tx(work)
        await self._publish(kills)
        self.wake()
        return view

    async def events(
        self, job_id: str, *, after: int | None = None, limit: int = jobstore.PAGE
    ) -> Any:
        return await self.store.tx(lambda s: jobstore.events(s, job_id, after=after, limit=limit))

    async def attempts(
        self, job_id: str, *, after: int | None = None, limit: int = jobstore.PAGE
    ) -> Any:
        return await self.store.tx(lambda s: jobstore.attempts(s, job_id, after=after, limit=limit))

    async def clusters(self) -> list[ClusterPublic]:
        return self.inventory.public(await self.store.tx(self.applier.held))

    # ---- policies, usage, audit ------------------------------------------------------

    def policies_info(self) -> dict[str, Any]:
        p = self.gate.current
        return {
            "folder": str(self.settings.policies_dir) if self.settings.policies_dir else None,
            "digest": p.digest,
            "sources": [
                {"path": src.path, "sha256": src.sha256, "policies": list(src.policies)}
                for src in p.sources
            ],
            "entries": [
                {
                    "kind": e.kind,
                    "name": e.name,
                    "file": e.origin.path,
                    "line": e.origin.line,
                    "sha256": e.sha256,
                }
                for e in p.entries
            ],
        }

    async def reload_policies(self) -> dict[str, Any]:
        now = self.clock()
        r = await self.store.tx(lambda s: self.gate.reload(s, now=now))
        if r.error is not None:
            raise r.error
        self.wake()  # the next pass uses the new set; running slices are not touched
        return {"changed": r.changed, **self.policies_info()}

    async def check_policy(self, manifest: JobManifest) -> Any:
        now = self.clock()
        facts = cluster_facts(self._shapes())
        return await self.store.tx(
            lambda s: self.gate.check(s, self.applier, manifest, now=now, clusters=facts)
        )

    async def usage(self, *, team: str | None, since: float | None) -> dict[str, Any]:
        from orrery_hub import usage as accounting

        now = self.clock()
        policies = self.gate.current

        def work(s: Session) -> dict[str, Any]:
            lines = accounting.report(s, policies, now=now, since=since, team=team)
            teams: dict[str, dict[str, float]] = {}
            for ln in lines:
                t = teams.setdefault(ln.team, {"gpuSeconds": 0.0, "cost": 0.0})
                t["gpuSeconds"] += ln.gpu_seconds
                t["cost"] += ln.cost
            current = self.gate.usage(s, self.applier, now)
            return {
                "since": since,
                "now": now,
                "jobs": [
                    {
                        "job": ln.job,
                        "team": ln.team,
                        "queue": ln.queue,
                        "attempts": ln.attempts,
                        "gpuSeconds": round(ln.gpu_seconds, 3),
                        "cost": round(ln.cost, 4),
                    }
                    for ln in lines
                ],
                "teams": {
                    k: {"gpuSeconds": round(v["gpuSeconds"], 3), "cost": round(v["cost"], 4)}
                    for k, v in sorted(teams.items())
                },
                "gpusInUse": {
                    "byTeam": dict(current.gpus_by_team),
                    "byQueue": dict(current.gpus_by_queue),
                },
            }

        return await self.store.tx(work)

    async def audit(
        self, *, job: str | None, limit: int, before: int | None = None
    ) -> list[dict[str, Any]]:
        from sqlmodel import col

        from orrery_hub.store.models import AuditRow

        def work(s: Session) -> list[dict[str, Any]]:
            q = select(AuditRow).order_by(col(AuditRow.id).desc()).limit(limit)
            if job:
                q = q.where(AuditRow.job_id == job)
            if before is not None:  # the next page, newest first: rows older than that id
                q = q.where(col(AuditRow.id) < before)
            return [
                {
                    "id": a.id,
                    "at": a.at,
                    "kind": a.kind,
                    "job": a.job_id,
                    "decision": a.decision,
                    "detail": a.detail,
                    "policies": a.policies,
                    "digest": a.digest,
                }
                for a in s.exec(q)
            ]

        return await self.store.tx(work)

    async def record_denial(
        self, status: int, who: Principal | None, what: str, reason: str, source: str
    ) -> None:
        """A refused API call, in the audit log: who, what, why — never the token. Each is
        counted; the rows are rate-limited per client address, so a flood of bad calls
        cannot grow the audit table without bound."""
        now = self.clock()
        self.metrics.api_denied.labels(str(status)).inc()
        if self._denial_audit.take(source, now) > 0:
            self.metrics.api_denied_unaudited.inc()
            return
        caller = "anonymous" if who is None else f"{who.subject} ({who.role.value})"
        decision = "unauthenticated" if status == 401 else "forbidden"
        detail = f"{what} by {caller}: {reason}"
        await self.store.tx(
            lambda s: self.gate.audit(s, at=now, kind="auth", decision=decision, detail=detail)
        )

    async def job_counts(self) -> dict[str, int]:
        def work(s: Session) -> dict[str, int]:
            counts: dict[str, int] = {}
            for phase in s.exec(select(JobRow.phase)).all():
                counts[phase] = counts.get(phase, 0) + 1
            return counts

        return await self.store.tx(work)

    @property
    def healthy(self) -> bool:
        return self._ready.is_set() and self._connected


def describe_endpoints(e: Endpoints) -> str:
    return json.dumps({"api": e.api_url, "nats": e.nats_url})


__all__ = ["Endpoints", "Hub", "InvalidInput", "describe_endpoints"]
