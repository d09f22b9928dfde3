"""``POST /v1/jobs`` is answered by ``api.fastsubmit`` beside the router: each answer must
be the one the declared route gives (status, problem body, headers a client reads)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from orrery_hub.api.fastsubmit import SubmitFastPath
from orrery_hub.api.limits import MAX_BODY
from orrery_hub.main import Hub, build_app
from tests.conftest import ADMIN

GOOD = """
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: fast-job, labels: {team: nlp}}
spec: {slices: 2, gpusPerSlice: 4, gpuType: H100, command: ["true"]}
"""
YAML = {"content-type": "application/yaml"}

CASES: list[tuple[str, dict[str, str], bytes]] = [
    ("good", {**ADMIN, **YAML}, GOOD.encode()),
    ("bad yaml", {**ADMIN, **YAML}, b"spec: ["),
    ("empty", {**ADMIN, **YAML}, b""),
    ("not utf-8", {**ADMIN, **YAML}, b"\xff\xfe"),
    ("bad field", {**ADMIN, **YAML}, GOOD.replace("slices: 2", "slices: two").encode()),
    ("no token", YAML, GOOD.encode()),
    ("unknown token", {"Authorization": "Bearer nope", **YAML}, GOOD.encode()),
    ("too large", {**ADMIN, **YAML}, b"#" * (MAX_BODY + 1)),
]


def _comparable(r: httpx.Response) -> tuple[Any, ...]:
    body = r.json()
    if r.status_code == 201:  # the job itself differs (id, times): compare its shape
        body = (sorted(body), body["status"]["phase"], body["spec"], body["metadata"])
    headers = {k: r.headers.get(k) for k in ("content-type", "www-authenticate", "connection")}
    return r.status_code, body, headers


async def _answer(app: Any, headers: dict[str, str], content: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as c:
        return await c.post("/v1/jobs", headers=headers, content=content)


@pytest.mark.parametrize(("case", "headers", "content"), CASES, ids=[c[0] for c in CASES])
async def test_the_fast_path_answers_as_the_route_does(
    hub: Hub, case: str, headers: dict[str, str], content: bytes
) -> None:
    fast = build_app(hub)
    assert any(m.cls is SubmitFastPath for m in fast.user_middleware)
    routed = build_app(hub)
    routed.user_middleware = [m for m in routed.user_middleware if m.cls is not SubmitFastPath]
    a = await _answer(fast, headers, content)
    b = await _answer(routed, headers, content)
    assert _comparable(a) == _comparable(b)
    assert a.status_code == (201 if case == "good" else a.status_code)
    assert (a.status_code == 201) is (case == "good")


async def test_other_requests_pass_through(hub: Hub) -> None:
    app = build_app(hub)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hub", headers=ADMIN
    ) as c:
        assert (await c.get("/v1/jobs")).status_code == 200
        assert (await c.put("/v1/jobs", content=GOOD)).status_code == 405
        assert (await c.get("/healthz")).status_code == 200
