"""Cluster identity routes: join tokens, enrollment, approval, revocation.

POST /v1/clusters/tokens          clusters:admin   a one-time join token (shown once)
POST /v1/clusters:enroll          the join token   a CSR in, a certificate out
GET  /v1/clusters:ca              open             the CA certificate and its hash (public; a
                                                   joining spoke checks it against --ca-hash
                                                   before it sends its token)
GET  /v1/enrollments              clusters:read    enrolled clusters and their state
POST /v1/clusters/{name}:approve  clusters:admin   (hub started with --require-approval)
POST /v1/clusters/{name}:revoke   clusters:admin   its certificate stops working at once
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from orrery.certs import ca_hash
from orrery.duration import parse_duration
from orrery.errors import Conflict, InvalidInput
from orrery.resources import Problem
from orrery_hub.auth import Permission, Principal, require
from orrery_hub.identity import enroll as ops

if TYPE_CHECKING:
    from orrery_hub.api.protocol import HubApi
    from orrery_hub.identity.service import ClusterIdentity

Admin = Annotated[Principal, require(Permission.CLUSTERS_ADMIN)]
Reader = Annotated[Principal, require(Permission.CLUSTERS_READ)]


class JoinTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cluster: str = Field(max_length=63)
    ttl: str = Field(default="1h", max_length=16)
    labels: dict[str, str] = Field(default_factory=dict, max_length=ops.MAX_LABELS)


class JoinToken(BaseModel):
    cluster: str
    token: str
    expires_at: float = Field(serialization_alias="expiresAt")
    ca_hash: str = Field(serialization_alias="caHash")


class CaInfo(BaseModel):
    ca: str
    ca_hash: str = Field(serialization_alias="caHash")


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cluster: str = Field(max_length=63)
    token: str = Field(max_length=200)
    csr: str = Field(max_length=8192)


class Enrollment(BaseModel):
    cluster: str
    state: str
    labels: dict[str, str]
    certificate: str
    ca: str
    nats_urls: list[str] = Field(serialization_alias="natsUrls")
    orders_key: str = Field(serialization_alias="ordersKey")


def cluster_routes(hub: HubApi, denied: dict[int | str, dict[str, Any]]) -> APIRouter:
    r = APIRouter()

    def identity() -> ClusterIdentity:
        if hub.identity is None:
            raise Conflict("cluster identity is off: this hub runs with --insecure")
        return hub.identity

    @r.post(
        "/v1/clusters/tokens",
        status_code=201,
        response_model=JoinToken,
        response_model_by_alias=True,
        responses={**denied, 422: {"model": Problem}},
        summary="A one-time join token for one cluster name; shown in this response only",
    )
    async def create_join_token(req: JoinTokenRequest, who: Admin) -> JoinToken:
        now = hub.clock()
        try:
            ttl = parse_duration(req.ttl)
        except ValueError as exc:
            raise InvalidInput(f"ttl: {exc}") from None
        token = await identity().create_token(
            hub.store, cluster=req.cluster, ttl_s=ttl, labels=req.labels, now=now
        )
        return JoinToken(
            cluster=req.cluster,
            token=token,
            expires_at=now + ttl,
            ca_hash=ca_hash(identity().ca.pem),
        )

    @r.get(
        "/v1/clusters:ca",
        response_model=CaInfo,
        response_model_by_alias=True,
        summary="The hub CA certificate and its pin (sha256 of its SubjectPublicKeyInfo)",
    )
    async def ca_info() -> CaInfo:
        pem = identity().ca.pem
        return CaInfo(ca=pem.decode(), ca_hash=ca_hash(pem))

    @r.post(
        "/v1/clusters:enroll",
        response_model=Enrollment,
        response_model_by_alias=True,
        responses={403: {"model": Problem}, 422: {"model": Problem}},
        summary="Enroll a cluster: its join token and a CSR; returns its certificate",
    )
    async def enroll(req: EnrollRequest) -> Enrollment:
        ident = identity()
        row, cert = await ident.enroll(
            hub.store,
            token=req.token,
            cluster=req.cluster,
            csr_pem=req.csr.encode(),
            now=hub.clock(),
        )
        return Enrollment(
            cluster=row.cluster,
            state=row.state,
            labels=dict(row.labels),
            certificate=cert.decode(),
            ca=ident.ca.pem.decode(),
            nats_urls=[hub.nats_url] if hub.nats_url else [],
            orders_key=ident.orders_pub(),
        )

    @r.get("/v1/enrollments", responses=denied, summary="Enrolled clusters and their state")
    async def enrollments(who: Reader) -> list[dict[str, Any]]:
        ident = identity()
        return [ident.public(e) for e in await hub.store.tx(ops.enrollments)]

    @r.post(
        "/v1/clusters/{name}:approve",
        responses={**denied, 404: {"model": Problem}},
        summary="Approve an enrolled cluster (hubs started with --require-approval)",
    )
    async def approve(name: str, who: Admin) -> dict[str, Any]:
        ident = identity()
        row = await ident.set_state(hub.store, name, "Approved", now=hub.clock())
        return ident.public(row)

    @r.post(
        "/v1/clusters/{name}:revoke",
        responses={**denied, 404: {"model": Problem}},
        summary="Revoke a cluster: NATS drops it at once; its slices are placed elsewhere",
    )
    async def revoke(name: str, who: Admin) -> dict[str, Any]:
        ident = identity()
        row = await ident.set_state(hub.store, name, "Revoked", now=hub.clock())
        hub.wake()
        return ident.public(row)

    return r
