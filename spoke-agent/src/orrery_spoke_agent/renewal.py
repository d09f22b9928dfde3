"""Certificate renewal without a restart: once 20% of the certificate's validity is left
(Karmada's threshold), a CSR goes to the hub on this cluster's own renew subject and the new
certificate is loaded into the live TLS context, which the next reconnection uses."""

from __future__ import annotations

import json
import logging
import ssl

from nats.aio.client import Client as NATS

from orrery.certs import needs_renewal
from orrery.clusterid import SpokeIdentity

log = logging.getLogger("orrery.spoke")


class Renewer:
    """Checked at every heartbeat, against the validity kept in memory."""

    def __init__(
        self, cluster: str, identity: SpokeIdentity | None, tls: ssl.SSLContext | None
    ) -> None:
        self.cluster = cluster
        self.identity = identity
        self.tls = tls
        self._next_renew_check = 0.0
        self._validity: tuple[float, float] | None = None

    async def maybe_renew(self, nc: NATS, subject: str, now: float) -> bool:
        """Renew the certificate once 20% of its validity is left: a CSR on this cluster's
        own report subject, the new certificate into the live TLS context (the next
        reconnection uses it; no restart). Checked at every heartbeat, against the validity
        kept in memory."""
        if self.identity is None or self.tls is None:
            return False
        if now < self._next_renew_check:
            return False
        if self._validity is None:
            self._validity = self.identity.validity()
        if not needs_renewal(*self._validity, now):
            return False
        cluster = self.cluster
        self._next_renew_check = now + 5.0  # not every beat while the hub cannot answer
        key, csr = self.identity.new_csr(cluster)
        try:
            reply = await nc.request(subject, json.dumps({"csr": csr.decode()}).encode(), timeout=5)
            out = json.loads(reply.data)
        except Exception as exc:
            log.warning("certificate renewal unanswered: %r", exc, extra={"cluster": cluster})
            return False
        if not isinstance(out, dict) or "certificate" not in out:
            why = out.get("error") if isinstance(out, dict) else "bad reply"
            log.error("certificate renewal refused: %s", why, extra={"cluster": cluster})
            return False
        self.identity.install(key, out["certificate"].encode(), self.tls)
        self._validity = self.identity.validity()
        self._next_renew_check = 0.0
        log.info("certificate renewed", extra={"cluster": cluster, "until": self._validity[1]})
        return True
