"""The composition root: ``Hub`` builds every part of the running hub from its settings
and runs them — NATS in and out, the reconcile loop, the API server — all supervised.

Each role lives in its own folder (``runtime/`` reports in, orders out, the loop and what
the API calls; ``reconcile/``, ``apply/``, ``admission/``, ``store/``, ``api/``); this module
only assembles them. ``Hub.run()`` starts every task in one ``asyncio.TaskGroup``: if any
of them fails, the others are cancelled and the error surfaces, rather than a loop dying
silently. Handlers of single messages, on the other hand, log and drop what they cannot
handle (a malformed report must never take the hub down).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from sqlmodel import Session, select

from orrery import natsconnect
from orrery.errors import InvalidInput, Unavailable
from orrery.natsserver import NatsServer, free_port
from orrery.wire import NodeReport, SliceKey, Subjects
from orrery.wire.subjects import ALL_GATEWAY_SYNCS
from orrery_hub.admission.admit import Admitter
from orrery_hub.admission.gate import PolicyGate
from orrery_hub.admission.groupcommit import AdmissionQueue
from orrery_hub.api.app import DENIED, create_app
from orrery_hub.api.protocol import HubApi
from orrery_hub.apply.applier import Applier
from orrery_hub.apply.jobdb import JobDb
from orrery_hub.auth import Authenticator, bootstrap_admin
from orrery_hub.auth.ratelimit import RateLimiter
from orrery_hub.config.settings import HubSettings
from orrery_hub.console import console_routes
from orrery_hub.identity import files as identity_files
from orrery_hub.identity.natsconf import HUB_INBOX
from orrery_hub.identity.orderkey import load_or_create_order_key
from orrery_hub.identity.service import ClusterIdentity
from orrery_hub.leader import Elector
from orrery_hub.runtime.intake import ReportIntake
from orrery_hub.runtime.inventory import ClusterView, Inventory
from orrery_hub.runtime.lanes import Lanes
from orrery_hub.runtime.loop import ReconcileLoop
from orrery_hub.runtime.metrics import HubMetrics
from orrery_hub.runtime.repeats import Repeats
from orrery_hub.runtime.rows import Rows
from orrery_hub.runtime.service import HubService
from orrery_hub.serving import gatewaysync
from orrery_hub.serving.controller import ServiceController
from orrery_hub.serving.gatewayapi import gateway_routes
from orrery_hub.serving.routes import service_routes
from orrery_hub.store import Database
from orrery_hub.store.models import ClusterRow
from orrery_hub.store.runner import StoreRunner

log = logging.getLogger("orrery.hub")


def build_app(hub: HubApi) -> FastAPI:
    """The REST API, with the web console (a client of the same API) mounted beside it."""
    app = create_app(hub)
    app.include_router(service_routes(hub, DENIED))
    app.include_router(gateway_routes(hub, DENIED))
    app.include_router(console_routes(hub, DENIED))
    return app


@dataclass(frozen=True)
class Endpoints:
    api_url: str
    nats_url: str


class Hub(ReportIntake, ReconcileLoop, HubService):
    def __init__(self, settings: HubSettings, *, clock: Callable[[], float] = time.time) -> None:
        settings.check()
        self.settings = settings
        self.clock = clock
        self.inventory = Inventory()
        self.data_notes = {}
        self.data_prefetched = {}
        self.metrics = HubMetrics()
        # Policies first: a bad set refuses the start before anything is opened.
        self.gate = PolicyGate(settings.policies_dir)
        self.applier = Applier()
        self.jobdb = JobDb()
        # Every transaction keeps the job database up to date (rebuilt by the first).
        self.store = StoreRunner(Database.connect(settings.database_url), self.jobdb)
        self.admitter = Admitter(self.gate, self.jobdb, settings.checkpoints)
        self.admission = AdmissionQueue(self._admit_batch)
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
        self._last_nodes: dict[str, list[NodeReport]] = {}  # the list _last_free was made of
        self._capacity_memo = {}
        # Reports are processed per cluster, off the NATS callback (see ``intake``); what
        # the last processed report let a spoke forget is what a hurried reply carries.
        self.lanes: Lanes[list[SliceKey]] = Lanes()
        self.repeats = Repeats()
        self.rows = Rows()
        self._forget: dict[str, list[SliceKey]] = {}
        self._answering: set[asyncio.Task[None]] = set()
        # Inference services: replica jobs kept at what the autoscaler wants.
        self.serving = ServiceController(
            self, self.store.tx, clock=clock, heartbeat_s=settings.timing.heartbeat_interval_s
        )
        self.applier.avoid = self.serving.avoid
        self.serving.acting = lambda: self.leading  # a standby leaves services to the leader
        # Hub standby (``orrery_hub.leader``): with a leader lease, every write transaction
        # is fenced by this hub's leader epoch; it takes reports and schedules while it leads.
        self.elector: Elector | None = None
        self._reports: Subscription | None = None
        self._gateway_syncs: Subscription | None = None  # gateways sync with the leader too
        if settings.leader_lease_s > 0:
            self.elector = Elector(
                self.store,
                address=settings.advertise_url or "",
                ttl_s=settings.leader_lease_s,
                on_lead=self._on_lead,
                on_depose=self._on_depose,
            )
            self.store.db.fence = self.elector.fence

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
        # uvicorn may write headers and body separately; with Nagle on, each
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
            if s.admin_token is None and self.elector is None:
                written = await self.store.tx(
                    lambda db: bootstrap_admin(db, s.state_dir, self.clock())
                )
                if written is not None:
                    log.warning("created an admin API token", extra={"path": str(written)})
            await self._connect(nats_url)
            if self.identity is not None and not self.identity.manage_nats:
                await self._check_external_nats(nats_url)
            app = build_app(self)
            tls: dict[str, str] = {}
            if s.tls_cert is not None and s.tls_key is not None:
                tls = {"ssl_certfile": str(s.tls_cert), "ssl_keyfile": str(s.tls_key)}
            config = uvicorn.Config(
                app,
                http="httptools",  # uvicorn's C parser: ~1.7x the requests per core of h11
                log_level="warning",
                lifespan="off",
                access_log=False,
                **tls,  # type: ignore[arg-type]
            )
            server = uvicorn.Server(config)
            scheme = "https" if tls else "http"
            self.endpoints = Endpoints(f"{scheme}://{s.host}:{port}", nats_url)
            if self.elector is not None and not self.elector.address:
                self.elector.address = self.endpoints.api_url
            async with asyncio.TaskGroup() as tg:
                serving = tg.create_task(server.serve(sockets=[sock]), name="api")
                loop_task = tg.create_task(self._reconcile_loop(), name="reconcile")
                serving_task = tg.create_task(self.serving.run(), name="serving")
                electing = (
                    tg.create_task(self.elector.run(), name="leader")
                    if self.elector is not None
                    else None
                )
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
                    serving_task.cancel()
                    if electing is not None and self.elector is not None:
                        electing.cancel()
                        await self.elector.resign()  # a standby takes over at once
        finally:
            sock.close()
            if self.nc is not None and not self.nc.is_closed:
                await self.nc.close()
            for t in list(self._answering):
                t.cancel()
            await self.lanes.close()
            await self.admission.close()
            self.store.close()
            if self._nats_server:
                self._nats_server.stop()

    async def _check_external_nats(self, url: str) -> None:
        """A NATS the hub did not start must refuse anonymous clients (docs/security.md)."""
        assert self.identity is not None
        first = url.split(",")[0].strip()  # a cluster's members share one configuration
        if await self.identity.anonymous_allowed(first, self.settings.nats_ca):
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

    async def _restore(self, *, as_stored: bool = False) -> None:
        """The clusters the store knows into the inventory. ``as_stored``: as the leader
        last wrote them (a standby's view); else each Ready, with a full failover timeout
        from now to report before it counts as Lost (a hub that starts or takes over)."""
        now = self.clock()

        def load(s: Session) -> list[ClusterView]:
            return [
                ClusterView(
                    name=c.name,
                    labels=dict(c.labels),
                    address=c.address,
                    executor=c.executor,
                    incarnation=c.incarnation or "",
                    last_seen=c.last_heartbeat if as_stored else now,
                    state=c.state if as_stored else "Ready",
                    nodes=[NodeReport.model_validate(n) for n in c.nodes],
                )
                for c in s.exec(select(ClusterRow))
            ]

        views = await self.store.tx(load)
        if as_stored:
            self.inventory.replace(views)
        else:
            self.inventory.restore(views, now)

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
        if self.elector is None:
            await self._subscribe_reports()

    async def _subscribe_reports(self) -> None:
        assert self.nc is not None
        if self._reports is None:
            self._reports = await self.nc.subscribe(Subjects.ALL_REPORTS, cb=self._on_report)
        if self._gateway_syncs is None:
            self._gateway_syncs = await self.nc.subscribe(
                ALL_GATEWAY_SYNCS, cb=functools.partial(gatewaysync.answer, self)
            )

    async def _on_lead(self, epoch: int) -> None:
        """Elected: reload what a standby does not keep (enrollments, and the clusters, each
        given a full failover timeout to report to us), then take reports and schedule."""
        if self.identity is not None:
            await self.identity.restore(self.store)  # enrollments made under the last leader
        # The job database a standby kept may miss the last leader's commits: read it all
        # again at the next transaction (the one just below).
        self.jobdb.loaded = False
        await self._restore()
        self.rows.written.clear()  # the last leader may have written them since
        s = self.settings
        if s.admin_token is None:
            written = await self.store.tx(lambda db: bootstrap_admin(db, s.state_dir, self.clock()))
            if written is not None:
                log.warning("created an admin API token", extra={"path": str(written)})
        if self.nc is not None:
            await self._subscribe_reports()
        self.wake()

    async def _on_depose(self) -> None:
        """Another hub leads: stop taking reports (spokes and gateways report to the leader)."""
        subs = (self._reports, self._gateway_syncs)
        self._reports = self._gateway_syncs = None
        for sub in subs:
            try:
                if sub is not None:
                    await sub.unsubscribe()
            except Exception as exc:  # NATS gone: nothing to unsubscribe from
                log.debug("unsubscribe failed: %r", exc)

    def stop(self) -> None:
        """Ask ``run()`` to finish: the API stops serving, loops end, NATS closes."""
        self._stopping.set()

    @property
    def healthy(self) -> bool:
        return self._ready.is_set() and self._connected


def describe_endpoints(e: Endpoints) -> str:
    return json.dumps({"api": e.api_url, "nats": e.nats_url})


__all__ = ["Endpoints", "Hub", "InvalidInput", "build_app", "describe_endpoints"]
