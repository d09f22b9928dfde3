"""REST routes for inference services and for gateways.

    POST   /v1/services          an InferenceService manifest: create, or update (a changed
                                 command, image or env rolls the replicas); 201
    GET    /v1/services          every service the caller may see
    GET    /v1/services/{name}   one, with its replicas and the load driving it
    DELETE /v1/services/{name}   stop every replica and forget the service
    POST   /v1/gateway/sync      a gateway's measured load in, every service's routes out
                                 (the fallback: gateways sync over NATS, ``gatewaysync``)

A service is team-scoped like a job: its team comes from the token (``bind_team``), and a
member sees only its team's. Services need the job permissions (a replica is a job);
gateways need ``gateway:sync`` (operators and admins).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Request
from sqlmodel import Session, select

from orrery.errors import Forbidden, NotFound
from orrery.service_manifest import ServiceManifest, parse_service_manifest
from orrery.service_resources import (
    GatewayReport,
    GatewayRoutes,
    ReplicaView,
    ServicePublic,
    ServiceStatus,
)
from orrery_hub.auth import Permission, Principal, require
from orrery_hub.serving import gatewaysync
from orrery_hub.serving.controller import ServiceState
from orrery_hub.serving.rows import ServiceRow

if TYPE_CHECKING:
    from orrery_hub.api.protocol import HubApi


def bind_service_team(m: ServiceManifest, who: Principal) -> ServiceManifest:
    if not who.team_scoped:
        return m
    if m.team is not None and m.team != who.team:
        raise Forbidden(
            f"metadata.labels.team: {m.team!r} is not your team; your token submits for team "
            f"{who.team!r} (leave the label out, or set it to that)"
        )
    assert who.team is not None
    labels = {**m.metadata.labels, "team": who.team}
    return m.model_copy(update={"metadata": m.metadata.model_copy(update={"labels": labels})})


def public(row: ServiceRow, st: ServiceState | None) -> ServicePublic:
    m = ServiceManifest.model_validate(row.manifest)
    st = st or ServiceState()
    reps = [
        ReplicaView(
            replica=r.index,
            job=r.job,
            template=r.template,
            cluster=r.cluster,
            region=r.region,
            endpoint=r.endpoint,
            load=r.load,
            phase="Ready" if r.ready else ("Starting" if r.phase == "Running" else r.phase),
        )
        for r in st.replicas
    ]
    ready = sum(r.ready for r in st.replicas)
    outdated = any(r.template != row.template for r in st.replicas)
    if outdated:
        phase = "Updating"
    elif row.desired == 0 and not st.replicas and m.spec.autoscale.scale_to_zero:
        phase = "ScaledToZero"
    elif ready >= max(row.desired, 1) and len(st.replicas) == row.desired:
        phase = "Ready"
    elif ready:
        phase = "Scaling"
    else:
        phase = "Pending"
    return ServicePublic(
        name=row.name,
        metadata=m.metadata.model_dump(by_alias=True),
        spec=m.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        status=ServiceStatus(
            phase=phase,
            desired=row.desired,
            ready=ready,
            reason=st.reason,
            concurrency=st.samples[-1].concurrency if st.samples else 0.0,
            latency_p95_s=st.latency_p95_s,
            requests_per_s=st.requests_per_s,
            cold_start_s=st.cold_start_s,
            panic=st.panic,
            replicas=reps,
            created_at=row.created_at,
            template=row.template,
        ),
    )


def _visible(row: ServiceRow | None, name: str, who: Principal) -> ServiceRow:
    if row is None or not who.sees_team(row.team):
        raise NotFound(f"service {name!r} not found")
    return row


def service_routes(hub: HubApi, denied: dict[int | str, Any]) -> APIRouter:
    router = APIRouter()
    ctl = hub.serving
    schema = ServiceManifest.model_json_schema(by_alias=True)

    @router.post(
        "/v1/services",
        status_code=201,
        response_model=ServicePublic,
        response_model_by_alias=True,
        responses=denied,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": schema},
                    "application/yaml": {"schema": schema},
                },
            }
        },
        summary="Create or update an InferenceService (JSON or YAML)",
    )
    async def apply(
        request: Request, who: Annotated[Principal, require(Permission.JOBS_SUBMIT)]
    ) -> ServicePublic:
        from orrery_hub.api.problems import read_text

        m = bind_service_team(parse_service_manifest(await read_text(request)), who)
        now = hub.clock()

        def work(s: Session) -> ServiceRow:
            row = s.get(ServiceRow, m.name)
            if row is not None and not who.sees_team(row.team):
                raise Forbidden(f"service {m.name!r} belongs to another team")
            data = m.model_dump(mode="json", by_alias=True, exclude_none=True)
            if row is None:
                row = ServiceRow(
                    name=m.name,
                    team=m.team,
                    manifest=data,
                    template=m.spec.template_hash(),
                    created_at=now,
                )
            else:
                row.manifest, row.template, row.team = data, m.spec.template_hash(), m.team
            s.add(row)
            return row

        row = await hub.store.tx(work)
        return public(row, ctl.state.get(m.name))

    @router.get(
        "/v1/services",
        response_model=list[ServicePublic],
        response_model_by_alias=True,
        responses=denied,
    )
    async def list_services(
        who: Annotated[Principal, require(Permission.JOBS_READ)],
    ) -> list[ServicePublic]:
        rows: list[ServiceRow] = await hub.store.tx(lambda s: list(s.exec(select(ServiceRow))))
        return [public(r, ctl.state.get(r.name)) for r in rows if who.sees_team(r.team)]

    @router.get(
        "/v1/services/{name}",
        response_model=ServicePublic,
        response_model_by_alias=True,
        responses=denied,
    )
    async def get_service(
        name: str, who: Annotated[Principal, require(Permission.JOBS_READ)]
    ) -> ServicePublic:
        row = _visible(await hub.store.tx(lambda s: s.get(ServiceRow, name)), name, who)
        return public(row, ctl.state.get(name))

    @router.delete(
        "/v1/services/{name}",
        response_model=ServicePublic,
        response_model_by_alias=True,
        responses=denied,
    )
    async def delete_service(
        name: str, who: Annotated[Principal, require(Permission.JOBS_CANCEL)]
    ) -> ServicePublic:
        row = _visible(await hub.store.tx(lambda s: s.get(ServiceRow, name)), name, who)
        out = public(row, ctl.state.get(name))

        def drop(s: Session) -> list[str]:
            cur = s.get(ServiceRow, name)
            if cur is None:
                return []
            s.delete(cur)
            return [str(e["job"]) for e in cur.replicas]

        for job in await hub.store.tx(drop):
            try:
                await hub.cancel(job)
            except Exception:  # already final: nothing to stop
                pass
        return out

    @router.post(
        "/v1/gateway/sync",
        response_model=GatewayRoutes,
        response_model_by_alias=True,
        responses=denied,
    )
    async def gateway_sync(
        report: GatewayReport, who: Annotated[Principal, require(Permission.GATEWAY_SYNC)]
    ) -> GatewayRoutes:
        return await gatewaysync.sync(hub, report)

    return router
