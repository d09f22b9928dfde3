"""``/v1/tokens``: API tokens, admin only. Every change lands in the audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter
from sqlmodel import Session

from orrery.access import TokenCreated, TokenRequest, TokenView
from orrery.resources import Problem
from orrery_hub.auth import Permission, Principal, admin, require

if TYPE_CHECKING:
    from orrery_hub.api.protocol import HubApi

Admin = Annotated[Principal, require(Permission.TOKENS_ADMIN)]


def token_routes(hub: HubApi, denied: dict[int | str, dict[str, Any]]) -> APIRouter:
    r = APIRouter()

    @r.post(
        "/v1/tokens",
        status_code=201,
        response_model=TokenCreated,
        response_model_by_alias=True,
        responses={**denied, 422: {"model": Problem}},
        summary="Create an API token; its secret is in this response only",
    )
    async def create_token(req: TokenRequest, who: Admin) -> TokenCreated:
        now = hub.clock()

        def work(s: Session) -> TokenCreated:
            out = admin.create(s, req, by=who.subject, now=now)
            hub.gate.audit(
                s,
                at=now,
                kind="token",
                decision="created",
                detail=f"{admin.describe(out)}; by {who.subject}",
            )
            return out

        return await hub.store.tx(work)

    @r.get(
        "/v1/tokens",
        response_model=list[TokenView],
        response_model_by_alias=True,
        responses=denied,
        summary="Every API token: id, role, team, dates (never a secret)",
    )
    async def list_tokens(who: Admin) -> list[TokenView]:
        return await hub.store.tx(admin.list_all)

    @r.delete(
        "/v1/tokens/{token_id}",
        response_model=TokenView,
        response_model_by_alias=True,
        responses={**denied, 404: {"model": Problem}, 409: {"model": Problem}},
        summary="Revoke a token: refused from now on",
    )
    async def revoke_token(token_id: str, who: Admin) -> TokenView:
        now = hub.clock()

        def work(s: Session) -> TokenView:
            out = admin.revoke(s, token_id, now=now)
            hub.gate.audit(
                s,
                at=now,
                kind="token",
                decision="revoked",
                detail=f"{admin.describe(out)}; by {who.subject}",
            )
            return out

        out = await hub.store.tx(work)
        hub.auth.forget(token_id)
        return out

    return r
