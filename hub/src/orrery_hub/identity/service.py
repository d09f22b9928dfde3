"""The hub's side of cluster identity: its CA and files, the enrolled clusters (cached from
the store for the heartbeat path), and keeping nats-server's users in step with them."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlmodel import Session

from orrery.errors import Forbidden
from orrery.wire import Heartbeat
from orrery_hub.identity import enroll as ops
from orrery_hub.identity import files
from orrery_hub.identity import gateways as gwops
from orrery_hub.identity.files import IdentityPaths
from orrery_hub.store.identityrows import EnrollmentRow, GatewayRow
from orrery_hub.store.models import AuditRow

if TYPE_CHECKING:
    from orrery_hub.store.runner import StoreRunner

T = TypeVar("T")
log = logging.getLogger("orrery.hub.identity")


def _audit_gateway(s: Session, at: float, decision: str, detail: str) -> None:
    s.add(
        AuditRow(
            at=at,
            kind="gateway",
            job_id=None,
            decision=decision,
            detail=detail,
            policies=[],
            digest="",
        )
    )


@dataclass(frozen=True)
class Known:
    state: str
    labels: dict[str, str]


def audit(s: Session, *, at: float, kind: str, cluster: str, decision: str, detail: str) -> None:
    s.add(
        AuditRow(
            at=at,
            kind=kind,
            job_id=None,
            decision=decision,
            detail=f"cluster {cluster}: {detail}",
            policies=[],
            digest="",
        )
    )


class ClusterIdentity:
    def __init__(
        self,
        paths: IdentityPaths,
        *,
        manage_nats: bool,
        require_approval: bool,
        cert_ttl_s: float,
        create_ca: bool = True,
    ) -> None:
        self.paths = paths
        self.ca = files.ensure(paths, create_ca=create_ca)
        self.manage_nats = manage_nats
        self.require_approval = require_approval
        self.cert_ttl_s = cert_ttl_s
        self.known: dict[str, Known] = {}
        self._refused: dict[str, str] = {}  # last refusal audited per cluster (not every beat)
        self._gateways: list[GatewayRow] = []  # enrolled gateways: NATS users beside clusters

    def load(self, rows: list[EnrollmentRow], gateways: list[GatewayRow] | None = None) -> None:
        self.known = {r.cluster: Known(r.state, dict(r.labels)) for r in rows}
        if gateways is not None:
            self._gateways = gateways
        self.sync_nats(rows)

    def sync_nats(self, rows: list[EnrollmentRow]) -> None:
        """Rewrite nats-server's users from the enrollments, and reload it."""
        if not self.manage_nats:
            return
        files.write_users(self.paths, [*ops.nats_users(rows), *gwops.nats_users(self._gateways)])
        if files.reload_nats(self.paths):
            log.info(
                "nats-server reloaded",
                extra={
                    "clusters": sorted(r.cluster for r in rows if r.state == "Approved"),
                    "gateways": sorted(g.gateway for g in self._gateways),
                },
            )

    def client_tls(
        self, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
    ) -> ssl.SSLContext:
        """The hub's TLS context for NATS: its own CA and certificate, or those given for a
        NATS it did not start."""
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(ca or self.paths.ca_cert)
        )
        ctx.load_cert_chain(str(cert or self.paths.hub_cert), str(key or self.paths.hub_key))
        return ctx

    async def anonymous_allowed(self, url: str, ca: Path | None) -> bool:
        """Whether a client with no certificate gets into the NATS at ``url`` (one the hub
        did not start): with TLS but no client certificate, and with no TLS at all."""
        import nats

        anon = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(ca or self.paths.ca_cert)
        )
        for tls in (anon, None):
            try:
                nc = await nats.connect(
                    url, tls=tls, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0
                )
            except Exception:
                continue
            await nc.close()
            return True
        return False

    def accepts(self, cluster: str) -> bool:
        k = self.known.get(cluster)
        return k is not None and k.state == "Approved"

    def orders_pub(self) -> str:
        return files.ensure_order_key(self.paths).decode()

    # ---- the heartbeat path ------------------------------------------------------------

    def check(self, hb: Heartbeat) -> tuple[str | None, dict[str, str]]:
        """(why it is refused or None, the labels to record: the enrolled ones)."""
        k = self.known.get(hb.cluster)
        if k is None:
            return f"cluster {hb.cluster!r} has not enrolled", {}
        if k.state == "Revoked":
            return f"cluster {hb.cluster!r} was revoked", {}
        if k.state != "Approved":
            return f"cluster {hb.cluster!r} waits for `orrery cluster approve {hb.cluster}`", {}
        for key, value in hb.labels.items():
            bound = k.labels.get(key)
            if bound != value:
                said = "not bound at enrollment" if bound is None else f"enrolled as {bound!r}"
                return f"label {key}={value!r} refused: {said}", {}
        return None, dict(k.labels)

    def should_audit(self, cluster: str, reason: str | None) -> bool:
        """Audit a refusal once per change of reason, not at every heartbeat."""
        last = self._refused.get(cluster)
        if reason is None:
            self._refused.pop(cluster, None)
            return False
        self._refused[cluster] = reason
        return last != reason

    # ---- what the API and the renewal handler call -------------------------------------

    async def restore(self, store: StoreRunner) -> None:
        self.load(*await store.tx(lambda s: (ops.enrollments(s), gwops.gateways(s))))

    async def _change_gateways(self, store: StoreRunner, fn: Callable[[Session], T]) -> T:
        def work(s: Session) -> tuple[T, list[EnrollmentRow], list[GatewayRow]]:
            out = fn(s)
            s.flush()
            return out, ops.enrollments(s), gwops.gateways(s)

        out, rows, gws = await store.tx(work)
        self.load(rows, gws)
        return out

    async def enroll_gateway(
        self, store: StoreRunner, *, gateway: str, csr_pem: bytes, now: float, who: str
    ) -> tuple[GatewayRow, bytes]:
        def work(s: Session) -> tuple[GatewayRow, bytes]:
            e = gwops.enroll(
                s, self.ca, gateway=gateway, csr_pem=csr_pem, now=now, ttl_s=self.cert_ttl_s
            )
            _audit_gateway(s, now, "enrolled", f"gateway {gateway}: enrolled by {who}")
            return e.row, e.cert.pem

        row, pem = await self._change_gateways(store, work)
        log.info("gateway enrolled", extra={"gateway": gateway, "by": who})
        return row, pem

    async def revoke_gateway(
        self, store: StoreRunner, gateway: str, *, now: float, who: str
    ) -> None:
        def work(s: Session) -> None:
            gwops.revoke(s, gateway)
            _audit_gateway(s, now, "revoked", f"gateway {gateway}: revoked by {who}")

        await self._change_gateways(store, work)
        log.info("gateway revoked", extra={"gateway": gateway, "by": who})

    async def _change(
        self, store: StoreRunner, fn: Callable[[Session], T], *, nats: bool = True
    ) -> T:
        def work(s: Session) -> tuple[T, list[EnrollmentRow]]:
            out = fn(s)
            s.flush()
            return out, ops.enrollments(s)

        out, rows = await store.tx(work)
        self.known = {r.cluster: Known(r.state, dict(r.labels)) for r in rows}
        if nats:
            self.sync_nats(rows)
        return out

    async def create_token(
        self, store: StoreRunner, *, cluster: str, ttl_s: float, labels: dict[str, str], now: float
    ) -> str:
        def work(s: Session) -> str:
            token = ops.create_token(s, cluster=cluster, ttl_s=ttl_s, labels=labels, now=now)
            audit(
                s,
                at=now,
                kind="cluster",
                cluster=cluster,
                decision="token",
                detail=f"join token created (ttl {ttl_s:.0f}s, labels {labels})",
            )
            return token

        return await store.tx(work)

    async def enroll(
        self, store: StoreRunner, *, token: str, cluster: str, csr_pem: bytes, now: float
    ) -> tuple[EnrollmentRow, bytes]:
        def work(s: Session) -> tuple[EnrollmentRow, bytes]:
            e = ops.enroll(
                s,
                self.ca,
                token=token,
                cluster=cluster,
                csr_pem=csr_pem,
                now=now,
                cert_ttl_s=self.cert_ttl_s,
                require_approval=self.require_approval,
            )
            audit(
                s,
                at=now,
                kind="cluster",
                cluster=cluster,
                decision="enrolled",
                detail=f"enrolled ({e.row.state}), labels {e.row.labels}",
            )
            return e.row, e.cert.pem

        try:
            return await self._change(store, work)
        except Forbidden as exc:
            why = exc.message

            def refused(s: Session) -> None:
                audit(
                    s,
                    at=now,
                    kind="cluster",
                    cluster=cluster,
                    decision="refused",
                    detail=f"enrollment refused: {why}",
                )

            await store.tx(refused)
            raise

    async def set_state(
        self, store: StoreRunner, cluster: str, state: str, *, now: float
    ) -> EnrollmentRow:
        def work(s: Session) -> EnrollmentRow:
            row = ops.set_state(s, cluster, state, now=now)
            audit(
                s,
                at=now,
                kind="cluster",
                cluster=cluster,
                decision=state.lower(),
                detail=f"{state.lower()} by an admin",
            )
            return row

        return await self._change(store, work)

    async def renew(self, store: StoreRunner, *, cluster: str, csr_pem: bytes, now: float) -> bytes:
        def work(s: Session) -> bytes:
            issued = ops.renew(
                s, self.ca, cluster=cluster, csr_pem=csr_pem, now=now, cert_ttl_s=self.cert_ttl_s
            )
            audit(
                s,
                at=now,
                kind="cluster",
                cluster=cluster,
                decision="renewed",
                detail=f"certificate renewed until {issued.not_after:.0f}",
            )
            return issued.pem

        # Same enrollment, same NATS user: nothing to reload.
        return await self._change(store, work, nats=False)

    def public(self, row: EnrollmentRow) -> dict[str, Any]:
        return {
            "cluster": row.cluster,
            "state": row.state,
            "labels": dict(row.labels),
            "notAfter": row.not_after,
            "enrolledAt": row.enrolled_at,
        }
