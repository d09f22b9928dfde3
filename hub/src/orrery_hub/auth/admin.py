"""Create, list and revoke API tokens (on the store thread), each change audited by the
caller. The secret leaves here once, in ``TokenCreated``; the store keeps its hash."""

from __future__ import annotations

from sqlmodel import Session, col, select

from orrery.access import TokenCreated, TokenRequest, TokenView
from orrery.errors import Conflict, NotFound
from orrery_hub.auth import tokens
from orrery_hub.store.tokenrows import TokenRow


def _view(r: TokenRow) -> TokenView:
    return TokenView(
        id=r.id,
        role=r.role,
        team=r.team,
        name=r.name,
        created_at=r.created_at,
        created_by=r.created_by,
        expires_at=r.expires_at,
        revoked_at=r.revoked_at,
    )


def create(s: Session, req: TokenRequest, *, by: str, now: float) -> TokenCreated:
    new = tokens.mint()
    ttl = req.ttl_seconds
    row = TokenRow(
        id=new.id,
        digest=new.digest,
        role=req.role,
        team=req.team,
        name=req.name,
        created_at=now,
        created_by=by,
        expires_at=None if ttl is None else now + ttl,
    )
    s.add(row)
    return TokenCreated(**_view(row).model_dump(), token=new.text)


def list_all(s: Session) -> list[TokenView]:
    return [_view(r) for r in s.exec(select(TokenRow).order_by(col(TokenRow.created_at)))]


def revoke(s: Session, token_id: str, *, now: float) -> TokenView:
    row = s.get(TokenRow, token_id)
    if row is None:
        raise NotFound(f"token {token_id!r} not found")
    if row.revoked_at is not None:
        raise Conflict(f"token {token_id} is already revoked")
    row.revoked_at = now
    s.add(row)
    return _view(row)


def describe(v: TokenView) -> str:
    """For the audit log: everything but the secret."""
    scope = f"role {v.role}" + (f", team {v.team}" if v.team else "")
    name = f" ({v.name})" if v.name else ""
    return f"token {v.id}{name}: {scope}" + (
        f", expires at {v.expires_at:.0f}" if v.expires_at else ", no expiry"
    )
