"""Who is calling: a bearer token in, a ``Principal`` out (or ``Unauthenticated``).

Tokens accepted, in order:
- the hub's configured admin token (``HubSettings.admin_token``: tests, ``orrery up``),
- an API token ``orr_<id>.<secret>`` from the store (found by id, secret checked by hash),
- an OIDC JWT, where an issuer is configured (``oidc.py``).

Store lookups are cached for a few seconds so an API call does not queue behind a
scheduling pass on the store thread each time; a revoke on this hub drops the entry at
once (another hub on the same database sees it within ``CACHE_S``).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlmodel import Session, select

from orrery.errors import Unauthenticated
from orrery_hub.auth import tokens
from orrery_hub.auth.roles import Principal, Role
from orrery_hub.store.runner import StoreRunner
from orrery_hub.store.tokenrows import TokenRow

log = logging.getLogger("orrery.hub.auth")

CACHE_S = 5.0
ADMIN_FILE = "admin.token"
SETTINGS_ADMIN_ID = "admin"  # the Principal.token_id of HubSettings.admin_token


class Verifier(Protocol):
    """Another way to accept a bearer token (OIDC): a Principal, or None if not its kind."""

    async def verify(self, token: str, now: float) -> Principal | None: ...


@dataclass(frozen=True)
class _Cached:
    digest: str
    role: Role
    team: str | None
    name: str
    expires_at: float | None
    revoked: bool
    fetched_at: float


class Authenticator:
    def __init__(
        self,
        store: StoreRunner,
        *,
        admin_token: str | None,
        clock: Callable[[], float],
        verifiers: tuple[Verifier, ...] = (),
    ) -> None:
        self._store = store
        self._admin_digest = tokens.digest(admin_token) if admin_token else None
        self._clock = clock
        self._verifiers = verifiers
        self._cache: dict[str, _Cached] = {}

    def forget(self, token_id: str) -> None:
        self._cache.pop(token_id, None)

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated(
                "no token: send 'Authorization: Bearer <token>' (orrery: --token or ORRERY_TOKEN)"
            )
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        now = self._clock()
        if self._admin_digest is not None and hmac.compare_digest(
            tokens.digest(token), self._admin_digest
        ):
            return Principal(
                token_id=SETTINGS_ADMIN_ID, role=Role.ADMIN, team=None, subject="hub admin"
            )
        parsed = tokens.parse(token)
        if parsed is not None:
            return await self._api_token(*parsed, now)
        for v in self._verifiers:
            p = await v.verify(token, now)
            if p is not None:
                return p
        raise Unauthenticated("invalid token")

    async def _api_token(self, token_id: str, secret: str, now: float) -> Principal:
        c = self._cache.get(token_id)
        if c is None or now - c.fetched_at > CACHE_S:
            row = await self._store.tx(lambda s: s.get(TokenRow, token_id))
            if not isinstance(row, TokenRow):
                raise Unauthenticated("invalid token")
            c = _Cached(
                digest=row.digest,
                role=Role(row.role),
                team=row.team,
                name=row.name,
                expires_at=row.expires_at,
                revoked=row.revoked_at is not None,
                fetched_at=now,
            )
            self._cache[token_id] = c
        if not tokens.matches(secret, c.digest):
            raise Unauthenticated("invalid token")
        if c.revoked:
            raise Unauthenticated(f"token {token_id} was revoked")
        if c.expires_at is not None and now >= c.expires_at:
            raise Unauthenticated(f"token {token_id} expired")
        return Principal(
            token_id=token_id, role=c.role, team=c.team, subject=c.name or f"token {token_id}"
        )


def bootstrap_admin(s: Session, state_dir: Path, now: float) -> Path | None:
    """With no usable admin token in the store, make one and write it to
    ``<state_dir>/admin.token`` (0600). Returns the path written, or None. Runs on the
    store thread at start; the caller logs the path, never the token."""
    live = s.exec(
        select(TokenRow).where(TokenRow.role == Role.ADMIN.value, TokenRow.revoked_at == None)  # noqa: E711
    ).all()
    if any(r.expires_at is None or r.expires_at > now for r in live):
        return None
    new = tokens.mint()
    s.add(
        TokenRow(
            id=new.id,
            digest=new.digest,
            role=Role.ADMIN.value,
            team=None,
            name="bootstrap admin",
            created_at=now,
            created_by="hub",
        )
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / ADMIN_FILE
    write_secret_file(path, new.text + "\n")
    return path


def write_secret_file(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
