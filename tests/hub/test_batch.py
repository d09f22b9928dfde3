"""``POST /v1/jobs:batch`` and group commit: many manifests, one transaction, a status each."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from orrery_hub.admission.groupcommit import AdmissionQueue, Submission
from orrery_hub.main import Hub
from tests.conftest import ADMIN


def manifest(name: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "orrery/v1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {"command": ["true"], **spec},
    }


@pytest.fixture
async def api(hub: Hub) -> httpx.AsyncClient:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as c:
        yield c  # type: ignore[misc]


async def test_each_manifest_gets_its_own_status_and_only_good_ones_are_stored(
    api: httpx.AsyncClient,
) -> None:
    body = [manifest("a"), manifest("b", slices=0), manifest("c", gpusPerSlice=2)]
    r = await api.post("/v1/jobs:batch", json=body)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["status"] for i in items] == [201, 422, 201]
    assert items[1]["error"]["error"] == "ManifestError"
    assert any("slices" in f["field"] for f in items[1]["error"]["fields"])
    ids = [items[0]["job"]["id"], items[2]["job"]["id"]]
    assert ids[0].startswith("a-") and ids[1].startswith("c-")
    listed = {j["id"] for j in (await api.get("/v1/jobs")).json()["items"]}
    assert set(ids) <= listed and len(listed) == 2
    for job_id in ids:  # each one durable and whole, with its Submitted event
        events = (await api.get(f"/v1/jobs/{job_id}/events")).json()
        assert [e["kind"] for e in events] == ["Submitted"]


async def test_a_yaml_stream_of_documents_is_a_batch(api: httpx.AsyncClient) -> None:
    text = "\n---\n".join(json.dumps(manifest(f"y{i}")) for i in range(3)) + "\n---\n"
    r = await api.post(
        "/v1/jobs:batch", content=text, headers={"content-type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    assert [i["status"] for i in r.json()["items"]] == [201, 201, 201]


@pytest.mark.parametrize(
    ("body", "why"),
    [("[]", "no manifests"), (json.dumps([manifest("x")] * 1001), "at most 1000")],
    ids=["empty", "too many"],
)
async def test_a_batch_refused_whole_says_why(
    api: httpx.AsyncClient, body: str, why: str
) -> None:
    r = await api.post("/v1/jobs:batch", content=body)
    assert r.status_code == 422
    assert why in r.json()["detail"]
    assert (await api.get("/v1/jobs")).json()["items"] == []


async def test_the_batch_route_needs_a_token(hub: Hub) -> None:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url) as anon:
        r = await anon.post("/v1/jobs:batch", json=[manifest("x")])
    assert r.status_code == 401


async def test_submissions_that_arrive_during_a_commit_share_the_next_one() -> None:
    release, started = asyncio.Event(), asyncio.Event()
    batches: list[list[str]] = []

    async def admit(batch: list[Submission[str, str]]) -> list[list[str]]:
        batches.append([x for sub in batch for x in sub.items])
        started.set()
        await release.wait()
        return [[f"ok {x}" for x in sub.items] for sub in batch]

    q: AdmissionQueue[str, str] = AdmissionQueue(admit, max_jobs=3)
    first = asyncio.create_task(q.submit(["a"], 0.0))
    await started.wait()  # the first transaction is in flight
    rest = [asyncio.create_task(q.submit([x], 0.0)) for x in "bcde"]
    await asyncio.sleep(0)
    release.set()
    assert await first == ["ok a"]
    assert [await t for t in rest] == [["ok b"], ["ok c"], ["ok d"], ["ok e"]]
    # Bounded: at most three per transaction, in arrival order.
    assert batches == [["a"], ["b", "c", "d"], ["e"]]
    assert q.commits == 3


async def test_a_failed_commit_fails_every_submission_in_it() -> None:
    async def admit(batch: list[Submission[str, str]]) -> list[list[str]]:
        raise RuntimeError("disk full")

    q: AdmissionQueue[str, str] = AdmissionQueue(admit)
    with pytest.raises(RuntimeError, match="disk full"):
        await q.submit(["a"], 0.0)
    assert q.commits == 0
