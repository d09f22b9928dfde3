"""Dataset routes.

POST   /v1/datasets          datasets:write  a kind: Dataset manifest (YAML or JSON);
                                             creates it, or replaces its definition
GET    /v1/datasets          datasets:read   every dataset, with the clusters caching it
GET    /v1/datasets/{name}   datasets:read
DELETE /v1/datasets/{name}   datasets:write  refused (409) while a job that reads it is
                                             not final
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Request

from orrery.dataset import DatasetManifest, parse_dataset
from orrery.resources import CachedCopy, DatasetList, DatasetPublic, Problem
from orrery_hub.api.problems import read_text
from orrery_hub.auth import Permission, Principal, require
from orrery_hub.store import datasets as dsstore
from orrery_hub.store.models import DatasetRow

if TYPE_CHECKING:
    from orrery_hub.api.protocol import HubApi as Hub

Reader = Annotated[Principal, require(Permission.DATASETS_READ)]
Writer = Annotated[Principal, require(Permission.DATASETS_WRITE)]


def public(row: DatasetRow, hub: Hub) -> DatasetPublic:
    cached = [
        CachedCopy(
            cluster=cluster,
            version=d.version,
            state=d.state.value,
            size_bytes=d.size_bytes,
            bytes_done=d.bytes_done,
            in_use=d.in_use,
        )
        for cluster, held in sorted(hub.dataset_caches().items())
        for d in held
        if d.name == row.name
    ]
    return DatasetPublic(
        name=row.name,
        labels=row.labels,
        spec=dict(row.manifest.get("spec") or {}),
        size_bytes=row.size_bytes,
        created_at=row.created_at,
        cached=cached,
    )


def dataset_routes(hub: Hub, denied: dict[int | str, dict[str, Any]]) -> APIRouter:
    r = APIRouter()
    schema = DatasetManifest.model_json_schema(by_alias=True)

    @r.post(
        "/v1/datasets",
        status_code=201,
        response_model=DatasetPublic,
        response_model_by_alias=True,
        responses={**denied, 422: {"model": Problem}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": schema},
                    "application/yaml": {"schema": schema},
                },
            }
        },
        summary="Apply a kind: Dataset manifest (JSON or YAML)",
    )
    async def apply(request: Request, who: Writer) -> DatasetPublic:
        d = parse_dataset(await read_text(request))
        now = hub.clock()
        row = await hub.store.tx(lambda s: dsstore.put(s, d, now=now))
        return public(row, hub)

    @r.get(
        "/v1/datasets", response_model=DatasetList, response_model_by_alias=True, responses=denied
    )
    async def list_(who: Reader) -> DatasetList:
        rows = await hub.store.tx(dsstore.all_)
        return DatasetList(items=[public(row, hub) for row in rows])

    @r.get(
        "/v1/datasets/{name}",
        response_model=DatasetPublic,
        response_model_by_alias=True,
        responses={**denied, 404: {"model": Problem}},
    )
    async def get(name: str, who: Reader) -> DatasetPublic:
        return public(await hub.store.tx(lambda s: dsstore.get(s, name)), hub)

    @r.delete(
        "/v1/datasets/{name}",
        response_model=DatasetPublic,
        response_model_by_alias=True,
        responses={**denied, 404: {"model": Problem}, 409: {"model": Problem}},
    )
    async def delete(name: str, who: Writer) -> DatasetPublic:
        return public(await hub.store.tx(lambda s: dsstore.delete(s, name)), hub)

    return r
