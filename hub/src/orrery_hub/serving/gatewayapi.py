"""Gateway identity routes.

    POST   /v1/gateways:enroll     gateway:sync    a CSR in; a certificate for gateway-<id>,
                                                   the NATS URLs and the CA out
    POST   /v1/gateways/{id}:revoke clusters:admin revoke it: its NATS user goes, and
                                                   nats-server drops its connection

With ``--insecure`` enrollment still answers the NATS URLs (plain NATS, no certificate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Response

from orrery.errors import Conflict
from orrery.service_resources import GatewayEnrollment, GatewayEnrollRequest
from orrery.wire.subjects import gateway_sync
from orrery_hub.auth import Permission, Principal, require
from orrery_hub.identity.gateways import check_id
from orrery_hub.identity.natsconf import gateway_inbox

if TYPE_CHECKING:
    from orrery_hub.api.protocol import HubApi


def gateway_routes(hub: HubApi, denied: dict[int | str, Any]) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/gateways:enroll",
        response_model=GatewayEnrollment,
        response_model_by_alias=True,
        response_model_exclude_none=True,
        responses=denied,
        summary="A gateway's NATS identity: a CSR in, its certificate and the NATS URLs out",
    )
    async def enroll_gateway(
        req: GatewayEnrollRequest, who: Annotated[Principal, require(Permission.GATEWAY_SYNC)]
    ) -> GatewayEnrollment:
        check_id(req.gateway)
        urls = [u.strip() for u in (hub.nats_url or "").split(",") if u.strip()]
        out = GatewayEnrollment(
            gateway=req.gateway, nats_urls=urls, subject=gateway_sync(req.gateway)
        )
        if hub.identity is None:
            return out
        _row, pem = await hub.identity.enroll_gateway(
            hub.store,
            gateway=req.gateway,
            csr_pem=req.csr.encode(),
            now=hub.clock(),
            who=who.subject,
        )
        return out.model_copy(
            update={
                "certificate": pem.decode(),
                "ca": hub.identity.ca.pem.decode(),
                "inbox_prefix": gateway_inbox(req.gateway),
            }
        )

    @router.post(
        "/v1/gateways/{name}:revoke",
        status_code=204,
        responses=denied,
        summary="Revoke a gateway's NATS identity",
    )
    async def revoke_gateway(
        name: str, who: Annotated[Principal, require(Permission.CLUSTERS_ADMIN)]
    ) -> Response:
        if hub.identity is None:
            raise Conflict("gateway identity is off: this hub runs with --insecure")
        await hub.identity.revoke_gateway(hub.store, name, now=hub.clock(), who=who.subject)
        return Response(status_code=204)

    return router
