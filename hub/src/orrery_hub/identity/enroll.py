"""Join tokens and enrollment, inside one store transaction each (the store runs them one at
a time, so a token is spent exactly once).

A join token reads ``orrery-join.<id>.<secret>``: the id finds the row, the secret's
SHA-256 must match the stored digest (compared in constant time). It names one cluster,
carries the labels the admin bound, expires, and is spent on first use.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlmodel import Session, select

from orrery.errors import Conflict, Forbidden, InvalidInput, NotFound
from orrery.wire.subjects import valid_cluster_name
from orrery_hub.identity.ca import CertificateAuthority, Issued, nats_user
from orrery_hub.identity.natsconf import NatsUser, cluster_user
from orrery_hub.store.identityrows import EnrollmentRow, JoinTokenRow

TOKEN_PREFIX = "orrery-join"
MAX_LABELS = 32


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(cluster: str) -> None:
    if not valid_cluster_name(cluster):
        raise InvalidInput(f"cluster: {cluster!r} must be 1-63 lowercase letters, digits or '-'")


def check_labels(labels: dict[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        raise InvalidInput(f"labels: at most {MAX_LABELS}")
    for k, v in labels.items():
        if not k or len(k) > 63 or len(v) > 63:
            raise InvalidInput(f"labels: {k!r} must be 1-63 characters, its value at most 63")


def create_token(
    s: Session, *, cluster: str, ttl_s: float, labels: dict[str, str], now: float
) -> str:
    check_name(cluster)
    check_labels(labels)
    if ttl_s <= 0:
        raise InvalidInput("ttl: must be positive")
    tid, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    s.add(
        JoinTokenRow(
            id=tid,
            cluster=cluster,
            digest=_digest(secret),
            labels=dict(labels),
            created_at=now,
            expires_at=now + ttl_s,
        )
    )
    return f"{TOKEN_PREFIX}.{tid}.{secret}"


def spend_token(s: Session, token: str, *, cluster: str, now: float) -> JoinTokenRow:
    """The token's row, marked used; Forbidden (one line, naming why) otherwise."""
    prefix, _, rest = token.partition(".")
    tid, _, secret = rest.partition(".")
    row = s.get(JoinTokenRow, tid) if prefix == TOKEN_PREFIX and tid and secret else None
    if row is None or not hmac.compare_digest(row.digest, _digest(secret)):
        raise Forbidden("token: not a valid join token")
    if row.used_at is not None:
        raise Forbidden("token: this join token was already used")
    if now >= row.expires_at:
        raise Forbidden("token: this join token has expired")
    if row.cluster != cluster:
        raise Forbidden(f"token: this join token is for cluster {row.cluster!r}, not {cluster!r}")
    row.used_at = now
    s.add(row)
    return row


@dataclass(frozen=True)
class Enrolled:
    row: EnrollmentRow
    cert: Issued


def enroll(
    s: Session,
    ca: CertificateAuthority,
    *,
    token: str,
    cluster: str,
    csr_pem: bytes,
    now: float,
    cert_ttl_s: float,
    require_approval: bool,
) -> Enrolled:
    check_name(cluster)
    tok = spend_token(s, token, cluster=cluster, now=now)
    enrollment = secrets.token_hex(8)
    issued = ca.sign_cluster_csr(csr_pem, cluster=cluster, enrollment=enrollment, ttl_s=cert_ttl_s)
    row = s.get(EnrollmentRow, cluster) or EnrollmentRow(
        cluster=cluster,
        enrollment=enrollment,
        subject="",
        serial="",
        not_after=0,
        enrolled_at=now,
        changed_at=now,
    )
    # A new token for a known name re-enrolls it: the new enrollment id means certificates
    # of the old one map to no NATS user any more.
    row.enrollment = enrollment
    row.state = "Pending" if require_approval else "Approved"
    row.labels = dict(tok.labels)
    row.subject = nats_user(issued.cert.subject)
    row.serial = issued.serial
    row.not_after = issued.not_after
    row.enrolled_at = now
    row.changed_at = now
    s.add(row)
    return Enrolled(row, issued)


def renew(
    s: Session,
    ca: CertificateAuthority,
    *,
    cluster: str,
    csr_pem: bytes,
    now: float,
    cert_ttl_s: float,
) -> Issued:
    """A new certificate for an enrolled, approved cluster (same enrollment, so the same
    NATS user: no reload needed). Asked over NATS, on a subject only that cluster can use."""
    row = s.get(EnrollmentRow, cluster)
    if row is None or row.state != "Approved":
        raise Forbidden(f"cluster {cluster!r} is not enrolled and approved")
    issued = ca.sign_cluster_csr(
        csr_pem, cluster=cluster, enrollment=row.enrollment, ttl_s=cert_ttl_s
    )
    row.serial = issued.serial
    row.not_after = issued.not_after
    row.changed_at = now
    s.add(row)
    return issued


def set_state(s: Session, cluster: str, state: str, *, now: float) -> EnrollmentRow:
    row = s.get(EnrollmentRow, cluster)
    if row is None:
        raise NotFound(f"cluster {cluster!r} has not enrolled")
    if row.state == "Revoked" and state != "Revoked":
        raise Conflict(f"cluster {cluster!r} was revoked; enroll it again with a new token")
    row.state = state
    row.changed_at = now
    s.add(row)
    return row


def enrollments(s: Session) -> list[EnrollmentRow]:
    return list(s.exec(select(EnrollmentRow)))


def nats_users(rows: list[EnrollmentRow]) -> list[NatsUser]:
    """The NATS users: every approved enrollment (pending and revoked ones get none)."""
    return [cluster_user(r.cluster, r.subject) for r in rows if r.state == "Approved"]
