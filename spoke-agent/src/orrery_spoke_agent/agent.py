"""The spoke agent: one per cluster.

It sends the hub its full report on every heartbeat (capacity, and every attempt it knows
with its epoch and phase), runs the assignments the hub orders, and stops what the hub
orders stopped. It keeps a terminal attempt in its report until the hub says it has
recorded it (``HeartbeatAck.forget``), so no ending is ever lost with a message.

Fencing: it runs only the newest epoch of a slice it was given; a kill leaves a tombstone
so a late, older assignment never starts. Lease: each hub reply renews it; with none for
longer than the lease, every slice is stopped (by the executor's supervisors even if this
process is dead).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from orrery.certs import needs_renewal
from orrery.clusterid import SpokeIdentity, inbox_prefix
from orrery.wire import (
    Assignment,
    Heartbeat,
    HeartbeatAck,
    Kill,
    NodeReport,
    SliceKey,
    SlicePhase,
    SliceReport,
    SliceStatus,
    Subjects,
    WireError,
    decode,
    encode,
)
from orrery.wire.messages import INT64_MAX, clip
from orrery_spoke_agent.executor import Executor, LaunchError, Outcome, slice_env
from orrery_spoke_agent.inventory import Node
from orrery_spoke_agent.orders import OrderGate, horizon_file, load_verifier
from orrery_spoke_agent.settings import SpokeSettings

log = logging.getLogger("orrery.spoke")

K = tuple[str, int, int]


@dataclass
class Attempt:
    a: Assignment
    phase: SlicePhase
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    cause: Literal["workload", "platform"] | None = None  # why it failed, where known

    @property
    def key(self) -> SliceKey:
        return self.a.key


def _k(key: SliceKey) -> K:
    return (key.job, key.index, key.epoch)


def outbound_address(nats_url: str) -> str:
    """The local address that reaches the NATS server: where this cluster's slices listen."""
    host = urlparse(nats_url).hostname or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))  # UDP: sends nothing, only picks a route
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


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
        self._next_renew_check = 0.0
        self._validity: tuple[float, float] | None = None
        self.executor = executor
        self.nodes = {n.name: n for n in nodes}
        self.clock = clock
        self.subjects = Subjects(settings.cluster)
        self.incarnation = uuid.uuid4().hex[:12]
        self.address = settings.address or outbound_address(settings.nats_url)
        self.attempts: dict[K, Attempt] = {}
        self.tombstones: dict[tuple[str, int], int] = {}
        self._seq = itertools.count(1)
        # Refuses to start without a pinned hub key unless insecure (InvalidInput).
        self.orders = OrderGate(
            settings.cluster, load_verifier(settings, clock), horizon_file=horizon_file(settings)
        )
        self.nc: NATS | None = None
        self.last_ack: float | None = None
        self.lease_lapsed = False
        self._stop = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.heartbeat_ok = asyncio.Event()  # set at the first acknowledged heartbeat

    def _log(self, msg: str, a: Assignment | SliceKey, **kw: object) -> None:
        log.info(
            msg,
            extra={
                "job": a.job,
                "slice": a.index,
                "epoch": a.epoch,
                "cluster": self.settings.cluster,
                **kw,
            },
        )

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
                await self._adopt()
                await self._connect()
                beat = tg.create_task(self._heartbeat_loop(), name="heartbeat")
                await self._stop.wait()
                beat.cancel()
                # Local slices die with a stopped agent. Kubernetes Jobs outlive it (a helm
                # upgrade restarts the agent): their lease still bounds them, and the next
                # agent adopts them.
                if not getattr(self.executor, "outlives_agent", False):
                    await self._stop_all("agent shutting down", infra=True)
        finally:
            if self.nc is not None and not self.nc.is_closed:
                await self.nc.close()
            await self.executor.close()

    async def _adopt(self) -> None:
        """Take over what an earlier incarnation of this agent left running, by its markers."""
        for f in await self.executor.discover():
            a = f.assignment
            at = Attempt(a, SlicePhase.RUNNING, started_at=f.started_at)
            self.attempts[_k(a.key)] = at
            if f.outcome is None:
                self._log("adopted running slice", a)
                self._spawn_watch(at)
            else:
                self._finish(at, f.outcome)
                self._log("found ended slice", a, phase=at.phase.value)

    async def _connect(self) -> None:
        async def disconnected() -> None:
            log.warning("lost NATS; reconnecting", extra={"cluster": self.settings.cluster})

        async def reconnected() -> None:
            log.info("reconnected to NATS", extra={"cluster": self.settings.cluster})

        async def error(exc: Exception) -> None:
            log.debug("nats: %s", exc)

        async for attempt in AsyncRetrying(
            stop=stop_after_delay(300),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception_type((OSError, nats.errors.Error, asyncio.TimeoutError)),
            reraise=True,
        ):
            with attempt:
                secure: dict[str, Any] = {}
                if self._tls is not None:
                    # Its own inbox prefix: nats-server lets only this cluster read it.
                    secure = {"tls": self._tls, "inbox_prefix": inbox_prefix(self.settings.cluster)}
                self.nc = await nats.connect(
                    self.settings.nats_url,
                    **secure,
                    name=f"orrery-spoke-{self.settings.cluster}",
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    connect_timeout=2,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    error_cb=error,
                )
        assert self.nc is not None
        await self.nc.subscribe(self.subjects.orders, cb=self._on_order)

    # ---- heartbeats and the lease ----------------------------------------------------

    def current_nodes(self) -> list[NodeReport]:
        """Capacity as reported: the executor's own view where it has one (Kubernetes),
        else the declared nodes minus the GPUs of this agent's running slices."""
        dynamic = self.executor.capacity()
        if dynamic is not None:
            return dynamic
        used: dict[str, set[int]] = {}
        for at in self.attempts.values():
            if not at.phase.terminal:
                used.setdefault(at.a.node, set()).update(at.a.gpus)
        return [
            NodeReport(
                name=n.name,
                gpu_type=n.gpu_type,
                gpu_memory_mib=n.gpu_memory_mib,
                gpus=n.gpus,
                free=[i for i in range(n.gpus) if i not in used.get(n.name, set())],
            )
            for n in self.nodes.values()
        ]

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
            slices=[self._report(at) for at in self.attempts.values()],
        )

    def _report(self, at: Attempt) -> SliceReport:
        # What a workload or a peer chose (an exit code, a reason) is fitted to the wire's
        # limits here, so no value can make the heartbeat itself unsendable.
        code = at.exit_code
        if code is not None and not -INT64_MAX - 1 <= code <= INT64_MAX:
            code = 255
        try:
            progress = self.executor.progress(at.key)
        except Exception:  # a workload's progress file is never worth a heartbeat
            progress = None
        report = dict(
            job=at.a.job,
            index=at.a.index,
            epoch=at.a.epoch,
            phase=at.phase,
            node=at.a.node,
            gpus=list(at.a.gpus),
            exit_code=code,
            reason=clip(at.reason) if at.reason is not None else None,
            started_at=at.started_at,
            finished_at=at.finished_at,
            cause=at.cause,
        )
        try:
            return SliceReport.model_validate({**report, "progress": progress})
        except ValidationError as exc:
            log.warning("slice report did not fit the wire: %s", clip(str(exc), 512))
            report.update(started_at=None, finished_at=None, reason="unreportable values")
            return SliceReport.model_validate(report)

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
                timeout=max(1.0, self.settings.heartbeat_interval_s),
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
        if not ack.accepted:
            log.error(
                "hub refused this spoke: %s", ack.reason, extra={"cluster": self.settings.cluster}
            )
            return False
        self.last_ack = sent_at
        if self.lease_lapsed:
            log.info("hub answers again; lease renewed", extra={"cluster": self.settings.cluster})
        self.lease_lapsed = False
        await self.executor.renew_lease(sent_at)
        for key in ack.forget:
            at = self.attempts.get(_k(key))
            if at is not None and at.phase.terminal:
                del self.attempts[_k(key)]
                await self.executor.release(key)
        self.heartbeat_ok.set()
        return True

    async def maybe_renew(self) -> bool:
        """Renew the certificate once 20% of its validity is left: a CSR on this cluster's
        own report subject, the new certificate into the live TLS context (the next
        reconnection uses it; no restart). Checked at every heartbeat, against the validity
        kept in memory."""
        now = self.clock()
        if self.identity is None or self._tls is None or self.nc is None:
            return False
        if now < self._next_renew_check:
            return False
        if self._validity is None:
            self._validity = self.identity.validity()
        if not needs_renewal(*self._validity, now):
            return False
        cluster = self.settings.cluster
        self._next_renew_check = now + 5.0  # not every beat while the hub cannot answer
        key, csr = self.identity.new_csr(cluster)
        try:
            reply = await self.nc.request(
                self.subjects.renew, json.dumps({"csr": csr.decode()}).encode(), timeout=5
            )
            out = json.loads(reply.data)
        except Exception as exc:
            log.warning("certificate renewal unanswered: %r", exc, extra={"cluster": cluster})
            return False
        if not isinstance(out, dict) or "certificate" not in out:
            why = out.get("error") if isinstance(out, dict) else "bad reply"
            log.error("certificate renewal refused: %s", why, extra={"cluster": cluster})
            return False
        self.identity.install(key, out["certificate"].encode(), self._tls)
        self._validity = self.identity.validity()
        self._next_renew_check = 0.0
        log.info("certificate renewed", extra={"cluster": cluster, "until": self._validity[1]})
        return True

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval_s
        started = self.clock()
        while True:
            t0 = time.monotonic()
            await self.beat_once()
            await self.maybe_renew()
            since = self.clock() - (self.last_ack if self.last_ack is not None else started)
            running = any(not at.phase.terminal for at in self.attempts.values())
            if since > self.settings.lease_s and running and not self.lease_lapsed:
                self.lease_lapsed = True
                log.warning(
                    "lease lapsed: stopping every slice",
                    extra={"cluster": self.settings.cluster, "silent_s": round(since, 1)},
                )
                await self._stop_all(
                    f"lease lapsed: no reply from the hub for {since:.1f}s", infra=True
                )
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - t0)))

    # ---- orders ----------------------------------------------------------------------

    async def _on_order(self, msg: Msg) -> None:
        try:
            order = self.orders.admit(msg.data)  # None: dropped, counted and logged
            if order is None:
                return
            if isinstance(order, Assignment):
                await self.assign(order)
            else:
                await self.kill(order)
        except Exception:
            log.exception("handling an order failed", extra={"cluster": self.settings.cluster})

    async def assign(self, a: Assignment) -> None:
        if self.tombstones.get((a.job, a.index), -1) >= a.epoch:
            return  # killed before it arrived: never start it
        if (a.job, a.index, a.epoch) in self.attempts:
            return  # a resend: already have it
        same = [at for k, at in self.attempts.items() if k[0] == a.job and k[1] == a.index]
        if any(at.a.epoch > a.epoch for at in same):
            return  # we run a newer epoch already
        for old in same:
            if not old.phase.terminal:
                await self.executor.terminate(
                    old.key, self.settings.kill_grace_s, clip(f"superseded by epoch {a.epoch}")
                )
        if self.lease_lapsed:
            return  # the hub will resend once it hears from us again
        at = Attempt(a, SlicePhase.STARTING)
        problem = self._check_fit(a)
        if problem:
            at.phase, at.reason, at.finished_at = SlicePhase.FAILED, clip(problem), self.clock()
            at.cause = "platform"  # this spoke's state, not the workload
            self.attempts[_k(a.key)] = at
            self._log("refused assignment", a, reason=problem)
            await self._send_status(at)
            return
        self.attempts[_k(a.key)] = at
        try:
            at.started_at = await self.executor.launch(a, slice_env(a))
        except LaunchError as exc:
            at.phase, at.reason, at.finished_at = SlicePhase.FAILED, clip(exc.reason), self.clock()
            # Retryable: the platform failed (try again, elsewhere); not: the job never can.
            at.cause = "platform" if exc.retryable else "workload"
            self._log("launch failed", a, reason=exc.reason)
            await self._send_status(at)
            return
        at.phase = SlicePhase.RUNNING
        self._log("slice started", a, node=a.node, gpus=",".join(map(str, a.gpus)))
        self._spawn_watch(at)
        await self._send_status(at)

    def _check_fit(self, a: Assignment) -> str | None:
        if self.executor.capacity() is not None:
            known = {n.name for n in self.executor.capacity() or []}
            return (
                None
                if a.node in known
                else f"node lost: {a.node!r} is not a node of {self.settings.cluster}"
            )
        node = self.nodes.get(a.node)
        if node is None:
            return f"node lost: {a.node!r} is not a node of {self.settings.cluster}"
        bad = [g for g in a.gpus if not 0 <= g < node.gpus]
        if bad:
            return f"node lost: {a.node} has no GPU {bad}"
        busy = {
            g
            for at in self.attempts.values()
            if not at.phase.terminal and at.a.node == a.node
            for g in at.a.gpus
        } & set(a.gpus)
        if busy:
            return f"gpus busy: {a.node} GPUs {sorted(busy)} are in use"
        return None

    async def kill(self, k: Kill) -> None:
        self.tombstones[(k.job, k.index)] = max(self.tombstones.get((k.job, k.index), -1), k.epoch)
        hit = False
        for key, at in list(self.attempts.items()):
            if key[0] == k.job and key[1] == k.index and key[2] <= k.epoch:
                hit = hit or key[2] == k.epoch
                if not at.phase.terminal:
                    self._log("killing slice", at.a, reason=k.reason)
                    await self.executor.terminate(at.key, k.grace_s, k.reason or "killed by hub")
        if not hit:
            # Never had it: say so, so the hub can close that attempt.
            a = Assignment(
                sender="hub",
                seq=0,
                job=k.job,
                job_name=k.job,
                index=k.index,
                epoch=k.epoch,
                world_size=1,
                node="-",
                master_addr="-",
                master_port=1,
                command=["-"],
                checkpoint_dir="-",
            )
            at = Attempt(
                a,
                SlicePhase.KILLED,
                finished_at=self.clock(),
                reason="killed before it started",
                cause="platform",
            )
            self.attempts[_k(a.key)] = at
            await self._send_status(at)

    async def _stop_all(self, reason: str, *, infra: bool) -> None:
        del infra  # every agent-side stop is an infrastructure stop; the hub does not count it
        for at in list(self.attempts.values()):
            if not at.phase.terminal:
                await self.executor.terminate(at.key, self.settings.kill_grace_s, reason)

    # ---- watching attempts -----------------------------------------------------------

    def _spawn_watch(self, at: Attempt) -> None:
        assert self._tg is not None
        self._tg.create_task(self._watch(at), name=f"watch {at.a.job}/{at.a.index}/{at.a.epoch}")

    async def _watch(self, at: Attempt) -> None:
        try:
            outcome = await self.executor.wait(at.key)
        except Exception as exc:  # the executor lost track: report, do not crash the agent
            log.exception("watching slice failed")
            outcome = Outcome(exit_code=None, reason=f"vanished: {exc}", finished_at=self.clock())
        self._finish(at, outcome)
        self._log(
            "slice ended", at.a, phase=at.phase.value, exit_code=at.exit_code, reason=at.reason
        )
        await self._send_status(at)

    def _finish(self, at: Attempt, o: Outcome) -> None:
        at.exit_code = o.exit_code
        at.reason = clip(o.reason) if o.reason is not None else None
        at.finished_at = o.finished_at
        if o.killed:
            at.phase = SlicePhase.KILLED
            at.cause = "platform"  # stopped on an order, a lapsed lease, a shutdown
        elif o.exit_code == 0:
            at.phase = SlicePhase.SUCCEEDED
        else:
            at.phase = SlicePhase.FAILED
            # Its own exit code (a launch that cannot exec included: 126/127) is the
            # workload's; with none, the executor lost track or the platform stopped it,
            # and the reason says which (the hub reads its prefix).
            at.cause = "workload" if o.exit_code is not None else None

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
