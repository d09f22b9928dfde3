"""Reports in: heartbeats, slice statuses and certificate renewals from the spokes.

Every report arrives on one NATS callback; it is checked, handed to its cluster's lane
(``runtime.lanes``) and answered within the ack bound, so nothing here waits for the
store or for a scheduling pass."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from functools import partial

from nats.aio.msg import Msg
from sqlmodel import Session

from orrery.wire import (
    Heartbeat,
    HeartbeatAck,
    SliceKey,
    SliceStatus,
    Subjects,
    encode,
)
from orrery.wire.codec import WireError, decode_any
from orrery_hub import reconcile
from orrery_hub.identity.service import audit as audit_cluster
from orrery_hub.runtime.orders import OrderOutbox
from orrery_hub.runtime.rows import FULL_PER_TX, ROWS_LANE, write_row, write_rows
from orrery_hub.store import jobs as jobstore

log = logging.getLogger("orrery.hub")


# At most one commit of touch-only cluster rows (``last_heartbeat``) per this many seconds.
TOUCH_EVERY_S = 1.0


class ReportIntake(OrderOutbox):
    # When the report callback last let the event loop run something else.
    _yielded_at: float = 0.0

    async def _on_report(self, msg: Msg) -> None:
        try:
            await self._on_report_now(msg)
        finally:
            # nats.py hands a subscription's backlog over without ever yielding: under a
            # thousand heartbeats a second nothing else (the API, the replies) would run.
            # A yield per message costs a loop turn each, so the backlog goes in slices of
            # at most TURN_S; then the API, replies and lanes get their turn.
            if time.monotonic() - self._yielded_at >= TURN_S:
                await asyncio.sleep(0)
                self._yielded_at = time.monotonic()

    async def _on_report_now(self, msg: Msg) -> None:
        if msg.subject.endswith(".report.renew"):
            self._background(self._on_renew(msg))  # it signs and writes: off this callback
            return
        cluster = Subjects.cluster_of(msg.subject)
        beat = cluster is not None and msg.subject.endswith(".report.heartbeat")
        m: object = None  # a message of any kind; narrowed below
        if beat and cluster:
            m = self.repeats.lookup(cluster, msg.data)
        if m is None:
            try:
                m = decode_any(msg.data)
            except WireError as exc:
                self.metrics.bad_messages.inc()
                log.warning(
                    "dropped invalid message", extra={"subject": msg.subject, "error": str(exc)}
                )
                return
            if beat and cluster and isinstance(m, Heartbeat) and m.cluster == cluster:
                self.repeats.remember(cluster, msg.data, m)
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
                log.warning("dropped %s on a report subject", getattr(m, "kind", "?"))
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
        if hb.nodes is self._last_nodes.get(hb.cluster):
            # The very list the last one decoded to (a repeat, ``runtime.repeats``): the
            # capacity is as it was, and comparing 100 nodes again costs ~0.1 ms a beat.
            capacity_changed = False
        else:
            free = [(n.name, tuple(n.free)) for n in hb.nodes]
            capacity_changed = self._last_free.get(hb.cluster) != free
            self._last_free[hb.cluster] = free
            self._last_nodes[hb.cluster] = hb.nodes
        if persist or capacity_changed:
            self._last_persist[hb.cluster] = now
        settings = self.settings

        def work(s: Session) -> reconcile.Outbox:
            if persist or capacity_changed:
                write_row(s, hb, now)
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

        def idle() -> bool:
            """Nothing to reconcile: no slice reported or placed there. Its row, if due
            (it joined, came back or changed; or the periodic refresh), is written together
            with every other cluster's (one transaction), so a thousand spokes cost no
            transaction each, not even when they all join at once."""
            if hb.slices or self.jobdb.attempts_on(hb.cluster):
                return False
            if persist or capacity_changed:
                self.rows.add(hb, now, joined=not known)
                if not self.lanes.waiting(ROWS_LANE):  # one waiting writes every row due
                    self.lanes.submit(ROWS_LANE, self._write_rows, coalesce=True)
            self._forget[hb.cluster] = []
            if capacity_changed or not known or came_back:
                self.wake()  # the scheduler places on what the inventory holds
            return True

        if not self.lanes.busy(hb.cluster) and idle():
            # Nothing of this cluster's waits on its lane, so nothing is overtaken:
            # answered here, with no lane, task or timer (a thousand idle spokes a second
            # cost ~0.3 ms each that way, a third of a core).
            await self._reply(hb, msg, [], now)
            return

        async def process() -> list[SliceKey]:
            if idle():
                return []
            out = await self.store.tx(work)
            if persist or capacity_changed:
                self.rows.committed(hb)
            self._forget[hb.cluster] = list(out.forget)
            await self._publish(out.orders)
            if out.changed or capacity_changed or not known or came_back:
                self.wake()
            return out.forget

        done = self.lanes.submit(hb.cluster, process, coalesce=True)
        task = asyncio.create_task(self._answer(hb, msg, done, now))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _write_rows(self) -> list[SliceKey]:
        full, touch = self.rows.take()
        only_touched = bool(touch) and not full
        while full or touch:
            some, full = full[:FULL_PER_TX], full[FULL_PER_TX:]
            await self.store.tx(partial(write_rows, full=some, touch=touch))
            touch = []
            for hb, _, _ in some:
                self.rows.committed(hb)
        if only_touched:
            # Hold the lane a moment: the touches due meanwhile go in the next commit.
            # Taken whenever the lane was free, a thousand idle spokes' refreshes (200 a
            # second) made a commit, with its fsync, every few milliseconds.
            await asyncio.sleep(TOUCH_EVERY_S)
        return []

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
        await self._reply(hb, msg, forget, arrived)

    async def _reply(self, hb: Heartbeat, msg: Msg, forget: list[SliceKey], arrived: float) -> None:
        seq = next(self._seq)
        try:
            await msg.respond(
                _ack(seq)
                if not forget
                else encode(HeartbeatAck(sender="hub", seq=seq, forget=forget))
            )
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
        self.serving.observe(hb, arrived)
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


# How long the report callback may hold the event loop before it lets others run.
TURN_S = 0.002

# An acknowledgement with nothing to forget, encoded once: only its seq differs (~40 µs of
# serialising a beat otherwise).
_ACK_SEQ = 1_000_000_000_000_000_001
_ACK_HEAD, _ACK_TAIL = encode(HeartbeatAck(sender="hub", seq=_ACK_SEQ)).split(
    str(_ACK_SEQ).encode()
)


def _ack(seq: int) -> bytes:
    """``encode(HeartbeatAck(sender="hub", seq=seq))``, without pydantic."""
    return b"%b%d%b" % (_ACK_HEAD, seq, _ACK_TAIL)
