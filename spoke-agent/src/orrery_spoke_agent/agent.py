"""The spoke agent: one per cluster.

It sends the hub its full report on every heartbeat (capacity, and every attempt it knows
with its epoch and phase), runs the assignments the hub orders, and stops what the hub
orders stopped. It keeps a terminal attempt in its report until the hub says it has
recorded it (``HeartbeatAck.forget``), so no ending is ever lost with a message.

This module is the shell: NATS, asyncio, the executor, identity renewal and signed-order
verification. Every decision (fencing by epoch, the lease, what to report) is made by the
sans-IO ``SpokeState`` (``state.py``), which returns effects this shell carries out in
order. The lease also binds slices through the executor's supervisors, so they stop even
if this process is dead.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import time
import uuid
from collections.abc import Callable, Iterable

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from orrery import natsconnect
from orrery.cancellation import raise_if_cancelled
from orrery.clusterid import SpokeIdentity, inbox_prefix
from orrery.wire import (
    Assignment,
    Heartbeat,
    HeartbeatAck,
    Kill,
    NodeReport,
    Prefetch,
    SliceKey,
    SliceReport,
    SliceStatus,
    Subjects,
    WireError,
    decode,
    encode,
)
from orrery_spoke_agent.datawait import DataWaits
from orrery_spoke_agent.executor import Executor, LaunchError, Outcome, slice_env
from orrery_spoke_agent.inventory import Node
from orrery_spoke_agent.logserve import LogServer
from orrery_spoke_agent.orders import OrderGate, horizon_file, load_verifier
from orrery_spoke_agent.renewal import Renewer
from orrery_spoke_agent.reporting import current_nodes, outbound_address, slice_report
from orrery_spoke_agent.settings import SpokeSettings
from orrery_spoke_agent.staging import Stager
from orrery_spoke_agent.state import (
    Attempt,
    Effect,
    Launch,
    Note,
    Release,
    RenewLease,
    SendStatus,
    SpokeState,
    StopAll,
    Terminate,
    Watch,
)

log = logging.getLogger("orrery.spoke")

# The first connection: retried for five minutes (a spoke may start before its NATS), on
# any NATS error as well as the network's.
CONNECT_RETRY = natsconnect.Retry(
    give_up_after_s=300, max_wait_s=5, on=(OSError, nats.errors.Error, asyncio.TimeoutError)
)


class Agent:
    def __init__(
        self,
        settings: SpokeSettings,
        executor: Executor,
        nodes: list[Node],
        *,
        clock: Callable[[], float] = time.time,
        identity: SpokeIdentity | None = None,
    ) -> None:
        settings.check()
        self.settings = settings
        # The enrolled identity (None: --insecure): TLS to NATS with its certificate.
        self.identity = identity
        self._tls = identity.ssl_context() if identity is not None else None
        self.renewer = Renewer(settings.cluster, identity, self._tls)
        self.executor = executor
        self.clock = clock
        self.state = SpokeState(
            settings.cluster,
            nodes,
            lease_s=settings.lease_s,
            kill_grace_s=settings.kill_grace_s,
            started_at=clock(),
        )
        self.subjects = Subjects(settings.cluster)
        self.incarnation = uuid.uuid4().hex[:12]
        self.address = settings.address or outbound_address(settings.nats_url)
        self._seq = itertools.count(1)
        # Refuses to start without a pinned hub key unless insecure (InvalidInput).
        self.orders = OrderGate(
            settings.cluster, load_verifier(settings, clock), horizon_file=horizon_file(settings)
        )
        self.logs = LogServer(settings.cluster, executor.open_log)  # slices' output, to the hub
        self.nc: NATS | None = None
        self._stop = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.heartbeat_ok = asyncio.Event()  # set at the first acknowledged heartbeat
        # Datasets are staged into the cluster's cache before the slices reading them start.
        self.stager = Stager(
            settings.data_cache, limit_bytes=settings.data_cache_limit_bytes, clock=clock
        )
        self.data_waits = DataWaits(
            self.stager, self.state, apply=self._apply, launch=self._launch, clock=clock
        )

    # What the state knows, for callers and tests.
    @property
    def attempts(self) -> dict[SliceKey, Attempt]:
        return self.state.attempts

    @property
    def lease_lapsed(self) -> bool:
        return self.state.lease_lapsed

    @property
    def last_ack(self) -> float | None:
        return self.state.last_ack

    def _log(self, level: int, msg: str, key: SliceKey | None, **kw: object) -> None:
        extra: dict[str, object] = {"cluster": self.settings.cluster}
        if key is not None:
            extra |= {"job": key.job, "slice": key.index, "epoch": key.epoch}
        log.log(level, msg, extra=extra | kw)

    # ---- carrying out the state's effects ----------------------------------------------

    async def _apply(self, effects: Iterable[Effect]) -> None:
        for e in effects:
            match e:
                case Launch(a):
                    await self._launch(a)
                case Watch(key):
                    self._spawn_watch(key)
                case Terminate(key, grace, reason):
                    if not self.data_waits.stop(key, reason):
                        await self.executor.terminate(key, grace, reason)
                case StopAll(reason, keys, grace):
                    for key in keys:
                        if not self.data_waits.stop(key, reason):
                            await self.executor.terminate(key, grace, reason)
                case Release(key):
                    await self.executor.release(key)
                case SendStatus(key):
                    at = self.state.attempts.get(key)
                    if at is not None:
                        await self._send_status(at)
                case RenewLease(sent_at):
                    await self.executor.renew_lease(sent_at)
                case Note(level, message, key, fields):
                    lvl = {"info": logging.INFO, "warning": logging.WARNING}.get(
                        level, logging.ERROR
                    )
                    self._log(lvl, message, key, **dict(fields))

    async def _launch(self, a: Assignment, data: dict[str, str] | None = None) -> None:
        if a.datasets and data is None:
            # Staging may take hours: it runs beside the agent (``datawait``).
            assert self._tg is not None
            self.data_waits.start(self._tg, a)
            return
        try:
            started_at = await self.executor.launch(a, slice_env(a) | (data or {}))
        except LaunchError as exc:
            await self.stager.release(a.key)
            await self._apply(
                self.state.on_launch_failed(a.key, exc.reason, exc.retryable, self.clock())
            )
            return
        await self._apply(self.state.on_launched(a.key, started_at))

    # ---- lifecycle -------------------------------------------------------------------

    def shutdown(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.shutdown)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread (tests): the caller stops us
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self.stager.bind(lambda coro: tg.create_task(coro, name="dataset copy"))
                await asyncio.to_thread(self.stager.load)
                await self._adopt()
                await self._connect()
                beat = tg.create_task(self._heartbeat_loop(), name="heartbeat")
                await self._stop.wait()
                beat.cancel()
                self.stager.stop()
                self.data_waits.stop_all()
                # Local slices die with a stopped agent. Kubernetes Jobs outlive it (a helm
                # upgrade restarts the agent): their lease still bounds them, and the next
                # agent adopts them.
                if not getattr(self.executor, "outlives_agent", False):
                    await self._apply(self.state.on_shutdown())
        finally:
            if self.nc is not None and not self.nc.is_closed:
                await self.nc.close()
            await self.logs.close()
            await self.executor.close()

    async def _adopt(self) -> None:
        """Take over what an earlier incarnation of this agent left running, by its markers."""
        for f in await self.executor.discover():
            await self._apply(self.state.on_adopted(f.assignment, f.started_at, f.outcome))

    async def _connect(self) -> None:
        cluster = self.settings.cluster
        self.nc = await natsconnect.connect(
            self.settings.nats_url,
            name=f"orrery-spoke-{cluster}",
            retry=CONNECT_RETRY,
            tls=self._tls,
            # Its own inbox prefix: nats-server lets only this cluster read it.
            inbox_prefix=inbox_prefix(cluster) if self._tls is not None else None,
            context={"cluster": cluster},
        )
        await self.nc.subscribe(self.subjects.orders, cb=self._on_order)
        assert self._tg is not None
        await self.logs.subscribe(self.nc, self.subjects.logs, self._tg)

    # ---- heartbeats and the lease ----------------------------------------------------

    def current_nodes(self) -> list[NodeReport]:
        return current_nodes(self.executor, self.state)

    def heartbeat(self) -> Heartbeat:
        nodes = self.current_nodes()
        return Heartbeat(
            sender=f"spoke/{self.settings.cluster}",
            seq=next(self._seq),
            cluster=self.settings.cluster,
            incarnation=self.incarnation,
            address=self.address,
            labels=self.settings.all_labels,
            executor=self.executor.name,
            lease_s=self.settings.lease_s,
            nodes=nodes,
            slices=[self._report(at) for at in self.state.attempts.values()],
            datasets=self.stager.report() or None,
        )

    def _report(self, at: Attempt) -> SliceReport:
        return slice_report(at, self.executor, self.address)

    def reply_timeout(self) -> float:
        """How long a heartbeat waits for its reply: a second, but never more than a third
        of the lease (a short lease must not lapse on one slow reply) nor less than the
        heartbeat interval."""
        s = self.settings
        return max(s.heartbeat_interval_s, min(1.0, s.lease_s / 3))

    async def beat_once(self) -> bool:
        """Send one heartbeat; True when the hub answered (and the lease was renewed)."""
        assert self.nc is not None
        hb = self.heartbeat()
        # The lease is dated from when this heartbeat left, which is never later than when
        # the hub received it (and started its failover clock): the spoke's deadline can
        # only come before the hub's, whatever the reply's delay.
        sent_at = self.clock()
        try:
            reply = await self.nc.request(
                self.subjects.heartbeat,
                encode(hb),
                timeout=self.reply_timeout(),
            )
            ack = decode(reply.data, HeartbeatAck)
        except WireError as exc:
            self.orders.refused["bad_reply"] += 1
            log.warning(
                "invalid heartbeat reply dropped: %s", exc, extra={"cluster": self.settings.cluster}
            )
            return False
        except Exception as exc:  # timeout, no responders, disconnected
            log.debug("heartbeat unanswered: %r", exc)
            return False
        await self._apply(self.state.on_ack(ack, sent_at))
        if not ack.accepted:
            return False
        self.heartbeat_ok.set()
        return True

    async def maybe_renew(self) -> bool:
        if self.nc is None:
            return False
        return await self.renewer.maybe_renew(self.nc, self.subjects.renew, self.clock())

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval_s
        while True:
            raise_if_cancelled()  # nats.py's request() can swallow our cancellation
            t0 = time.monotonic()
            await self.beat_once()
            await self.maybe_renew()
            await self._apply(self.state.on_tick(self.clock()))
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - t0)))

    # ---- orders ----------------------------------------------------------------------

    async def _on_order(self, msg: Msg) -> None:
        try:
            order = self.orders.admit(msg.data)  # None: dropped, counted and logged
            if order is None:
                return
            if isinstance(order, Assignment):
                await self.assign(order)
            elif isinstance(order, Prefetch):
                await self.stager.prefetch(order.datasets)
            else:
                await self.kill(order)
        except Exception:
            log.exception("handling an order failed", extra={"cluster": self.settings.cluster})

    async def assign(self, a: Assignment) -> None:
        known = self.executor.capacity()
        names = None if known is None else {n.name for n in known}
        await self._apply(self.state.on_assignment(a, self.clock(), known_nodes=names))

    async def kill(self, k: Kill) -> None:
        await self._apply(self.state.on_kill(k, self.clock()))

    # ---- watching attempts -----------------------------------------------------------

    def _spawn_watch(self, key: SliceKey) -> None:
        assert self._tg is not None
        self._tg.create_task(self._watch(key), name=f"watch {key.job}/{key.index}/{key.epoch}")

    async def _watch(self, key: SliceKey) -> None:
        try:
            outcome = await self.executor.wait(key)
        except Exception as exc:  # the executor lost track: report, do not crash the agent
            log.exception("watching slice failed")
            outcome = Outcome(exit_code=None, reason=f"vanished: {exc}", finished_at=self.clock())
        await self.stager.release(key)  # its datasets may be evicted once no slice reads them
        await self._apply(self.state.on_outcome(key, outcome))

    async def _send_status(self, at: Attempt) -> None:
        if self.nc is None or not self.nc.is_connected:
            return  # the next heartbeat carries it
        st = SliceStatus(
            sender=f"spoke/{self.settings.cluster}",
            seq=next(self._seq),
            cluster=self.settings.cluster,
            incarnation=self.incarnation,
            slice=self._report(at),
        )
        try:
            await self.nc.publish(self.subjects.status, encode(st))
            await self.nc.flush(timeout=1)
        except Exception as exc:
            log.debug("status not sent (heartbeat will carry it): %r", exc)
