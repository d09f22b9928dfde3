"""/v1/services and /v1/gateway/sync against a real hub (real NATS, SQLite): a service
becomes replica jobs at its minimum, bad manifests are 422 naming the field, teams see
only their own, gateways need the gateway:sync permission, delete stops the replicas."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from orrery.service_manifest import SERVICE_LABEL
from orrery_hub.main import Hub
from tests.conftest import ADMIN

SVC = """
apiVersion: orrery/v1
kind: InferenceService
metadata: {name: chat, labels: {team: a}}
spec:
  replicas: {min: 2, max: 4}
  command: [python, serve.py]
"""
YAML = {"content-type": "application/yaml"}


@pytest.fixture
async def api(hub: Hub) -> httpx.AsyncClient:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as c:
        yield c  # type: ignore[misc]


async def token(api: httpx.AsyncClient, role: str, team: str | None) -> dict[str, str]:
    body = {"role": role, "team": team, "name": f"{role}-{team}"}
    r = await api.post("/v1/tokens", json=body)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def until(api: httpx.AsyncClient, pred: Any, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        s = (await api.get("/v1/services/chat")).json()
        if pred(s):
            return dict(s)
        assert time.monotonic() < deadline, s
        await asyncio.sleep(0.05)


async def test_a_service_becomes_replica_jobs_and_delete_stops_them(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/services", content=SVC, headers=YAML)
    assert r.status_code == 201, r.text
    s = await until(api, lambda s: len(s["status"]["replicas"]) == 2)
    assert s["status"]["desired"] == 2  # the minimum, with no load at all
    jobs = [x["job"] for x in s["status"]["replicas"]]
    for job in jobs:
        j = (await api.get(f"/v1/jobs/{job}")).json()
        assert j["metadata"]["labels"][SERVICE_LABEL] == "chat"
        assert j["spec"]["priority"] == 1000 and j["spec"]["slices"] == 1
    assert [x["name"] for x in (await api.get("/v1/services")).json()] == ["chat"]
    r = await api.delete("/v1/services/chat")
    assert r.status_code == 200
    assert (await api.get("/v1/services/chat")).status_code == 404
    for job in jobs:
        assert (await api.get(f"/v1/jobs/{job}")).json()["status"]["phase"] == "Cancelled"


async def test_a_bad_manifest_is_422_naming_the_field(api: httpx.AsyncClient) -> None:
    bad = SVC.replace("max: 4", "max: 1")
    r = await api.post("/v1/services", content=bad, headers=YAML)
    assert r.status_code == 422
    assert any(f["field"] == "spec.replicas" for f in r.json()["fields"]), r.text
    r = await api.post("/v1/services", content="kind: TrainingJob\n", headers=YAML)
    assert r.status_code == 422 and "InferenceService" in r.text


async def test_teams_see_their_own_services_and_gateways_need_permission(
    api: httpx.AsyncClient,
) -> None:
    member_a, member_b = await token(api, "member", "a"), await token(api, "member", "b")
    r = await api.post("/v1/services", content=SVC, headers={**YAML, **member_b})
    assert r.status_code == 403 and "not your team" in r.text
    r = await api.post("/v1/services", content=SVC, headers={**YAML, **member_a})
    assert r.status_code == 201, r.text
    assert (await api.get("/v1/services/chat", headers=member_b)).status_code == 404
    assert (await api.get("/v1/services", headers=member_b)).json() == []
    assert (await api.get("/v1/services/chat", headers=member_a)).status_code == 200
    report = {"gateway": "g1", "intervalS": 0.5, "services": []}
    r = await api.post("/v1/gateway/sync", json=report, headers=member_a)
    assert r.status_code == 403
    operator = await token(api, "operator", None)
    r = await api.post("/v1/gateway/sync", json=report, headers=operator)
    assert r.status_code == 200, r.text
    routes = r.json()["services"]
    assert routes[0]["name"] == "chat" and routes[0]["readinessPath"] == "/healthz"
    assert routes[0]["routes"] == []  # nothing placed: no cluster in this test
