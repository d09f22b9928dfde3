"""Inference gateways' NATS identities, inside one store transaction each.

A gateway proves itself to the API with a token that has ``gateway:sync``, sends a CSR, and
gets a certificate for ``gateway-<id>``: the NATS user it maps to may publish only its own
sync subject and read only its own inbox (``natsconf.gateway_user``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlmodel import Session, select

from orrery.errors import InvalidInput, NotFound
from orrery.names import is_dns_label
from orrery_hub.identity.ca import CertificateAuthority, Issued, gateway_subject, nats_user
from orrery_hub.identity.natsconf import NatsUser, gateway_user
from orrery_hub.store.identityrows import GatewayRow


def check_id(gateway: str) -> None:
    if not is_dns_label(gateway):
        raise InvalidInput(f"gateway: {gateway!r} must be 1-63 lowercase letters, digits or '-'")


@dataclass(frozen=True)
class GatewayEnrolled:
    row: GatewayRow
    cert: Issued


def enroll(
    s: Session, ca: CertificateAuthority, *, gateway: str, csr_pem: bytes, now: float, ttl_s: float
) -> GatewayEnrolled:
    """A certificate for ``gateway-<id>``; a new enrollment id each time, so an earlier
    certificate of the same id maps to no NATS user any more."""
    check_id(gateway)
    enrollment = secrets.token_hex(8)
    issued = ca.sign_csr(csr_pem, gateway_subject(gateway, enrollment), ttl_s=ttl_s)
    row = s.get(GatewayRow, gateway) or GatewayRow(
        gateway=gateway, enrollment="", subject="", serial="", not_after=0, enrolled_at=now
    )
    row.enrollment = enrollment
    row.subject = nats_user(issued.cert.subject)
    row.serial = issued.serial
    row.not_after = issued.not_after
    row.enrolled_at = now
    s.add(row)
    return GatewayEnrolled(row, issued)


def revoke(s: Session, gateway: str) -> None:
    row = s.get(GatewayRow, gateway)
    if row is None:
        raise NotFound(f"gateway {gateway!r} has not enrolled")
    s.delete(row)


def gateways(s: Session) -> list[GatewayRow]:
    return list(s.exec(select(GatewayRow)))


def nats_users(rows: list[GatewayRow]) -> list[NatsUser]:
    return [gateway_user(r.gateway, r.subject) for r in rows]
