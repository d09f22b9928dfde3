"""How the gateway syncs with the hub: NATS request/reply, or REST as a fallback.

At its first sync the gateway enrolls (``POST /v1/gateways:enroll`` with its API token and
a CSR): the hub answers the NATS URLs and, in secure mode, a certificate for
``gateway-<id>`` and the CA. Its key, certificate and CA stay in its state folder (0600
key). From then on each sync is one NATS request on ``orrery.v1.gateway.<id>.sync``,
answered by whichever hub leads, so a standby hub taking over needs nothing from the
gateway. REST (``POST /v1/gateway/sync`` to the one hub URL it was given) is kept for a hub
that predates gateway enrollment, and for a gateway that cannot reach the hub's NATS; the
log line at the first sync says which path is used and why.
"""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path

import httpx
from nats.aio.client import Client as NATS

from orrery import natsconnect
from orrery.certs import key_pem, make_csr, new_key, write_public, write_secret
from orrery.service_resources import GatewayEnrollment, GatewayEnrollRequest

log = logging.getLogger("orrery.gateway")
REQUEST_TIMEOUT_S = 5.0
NATS_CONNECT_S = 10.0  # then REST: the hub's NATS may not be reachable from here
# Syncs failed in a row with NATS disconnected before enrolling again (a hub restarted with
# its own nats-server on another port, or a new CA): the token decides whether it may.
REDECIDE_AFTER = 10


class HubError(Exception):
    """The hub refused a sync; the message says why."""


class HubLink:
    """One exchange per sync: a GatewayReport (JSON) out, GatewayRoutes (JSON) back."""

    def __init__(self, hub: httpx.AsyncClient, gateway: str, state_dir: Path | None) -> None:
        self.hub = hub
        self.gateway = gateway
        self.state_dir = state_dir
        self.nc: NATS | None = None
        self.subject: str | None = None
        self.mode = "pending"  # then "nats" or "rest"
        self._failed = 0

    async def exchange(self, body: bytes) -> bytes:
        if self.mode == "pending":
            await self._decide()
        if self.nc is not None and self.subject is not None:
            try:
                msg = await self.nc.request(self.subject, body, timeout=REQUEST_TIMEOUT_S)
                self._failed = 0
            except Exception:
                self._failed += 1
                if self._failed >= REDECIDE_AFTER and not self.nc.is_connected:
                    log.warning("gateway %s: NATS lost; enrolling again", self.gateway)
                    await self.close()
                    self.nc, self.subject, self.mode, self._failed = None, None, "pending", 0
                raise
            if msg.data.startswith(b'{"error"'):
                raise HubError(str(json.loads(msg.data).get("error")))
            return msg.data
        r = await self.hub.post(
            "/v1/gateway/sync", content=body, headers={"content-type": "application/json"}
        )
        r.raise_for_status()
        return r.content

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    async def _decide(self) -> None:
        key = new_key()
        req = GatewayEnrollRequest(gateway=self.gateway, csr=make_csr(key, self.gateway).decode())
        r = await self.hub.post(
            "/v1/gateways:enroll",
            content=req.model_dump_json(by_alias=True),
            headers={"content-type": "application/json"},
        )
        if r.status_code in (404, 405):
            self._rest("the hub has no gateway enrollment (an older hub)")
            return
        r.raise_for_status()  # an outage or a refused token: retried at the next sync
        e = GatewayEnrollment.model_validate_json(r.content)
        tls = self._tls(e, key_pem(key)) if e.certificate else None
        if not e.nats_urls:
            self._rest("the hub advertises no NATS URL")
            return
        try:
            self.nc = await natsconnect.connect(
                ",".join(e.nats_urls),
                name=f"orrery-gateway-{self.gateway}",
                retry=natsconnect.Retry(give_up_after_s=NATS_CONNECT_S, max_wait_s=1),
                tls=tls,
                inbox_prefix=e.inbox_prefix if tls is not None else None,
                context={"gateway": self.gateway},
            )
        except Exception as exc:
            self._rest(f"cannot reach the hub's NATS at {', '.join(e.nats_urls)}: {exc!r}")
            return
        self.subject, self.mode = e.subject, "nats"
        log.info(
            "gateway %s syncs with the hub over NATS (%s, %s)",
            self.gateway,
            e.subject,
            "certificate for gateway-" + self.gateway if tls else "no certificate: --insecure hub",
            extra={"gateway": self.gateway, "nats": e.nats_urls},
        )

    def _rest(self, why: str) -> None:
        self.mode = "rest"
        log.warning(
            "gateway %s syncs with the hub over REST (POST /v1/gateway/sync): %s",
            self.gateway,
            why,
            extra={"gateway": self.gateway},
        )

    def _tls(self, e: GatewayEnrollment, key: bytes) -> ssl.SSLContext:
        """Key 0600, certificate and CA in the state folder; a TLS context from them."""
        assert e.certificate is not None and e.ca is not None
        root = self.state_dir or Path(".orrery") / "gateways" / self.gateway
        root.mkdir(parents=True, exist_ok=True)
        key_path, cert_path, ca_path = root / "gateway.key", root / "gateway.crt", root / "ca.crt"
        write_secret(key_path, key)
        write_public(cert_path, e.certificate.encode())
        write_public(ca_path, e.ca.encode())
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_path))
        ctx.load_cert_chain(str(cert_path), str(key_path))
        return ctx
