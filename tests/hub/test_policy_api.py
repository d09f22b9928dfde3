"""Policies through the hub's API: refusals name each policy, reloads are all or nothing,
checks submit nothing, a guardrail's max runtime stops a running job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats
import pytest

from orrery.natsserver import NatsServer
from orrery.wire import (
    Heartbeat,
    NodeReport,
    SlicePhase,
    SliceReport,
    Subjects,
    decode_order,
    encode,
)
from orrery_hub.config.settings import HubSettings
from orrery_hub.main import Hub
from tests.conftest import ADMIN, ADMIN_TOKEN, FAST, running_hub

GOOD = """
apiVersion: orrery/v1
kind: Guardrail
metadata: {name: nlp-limits}
spec:
  match: {team: nlp}
  maxGpusPerJob: 8
  allowedGpuTypes: [H100]
  maxRuntime: 1s
"""


def job(gpus: int, team: str = "nlp", gpu_type: str = "H100") -> str:
    return (
        "apiVersion: orrery/v1\nkind: TrainingJob\n"
        f"metadata: {{name: j, labels: {{team: {team}}}}}\n"
        f"spec: {{gpusPerSlice: {gpus}, gpuType: {gpu_type}, command: [x]}}\n"
    )


@pytest.fixture
async def setup(
    tmp_path: Path, nats_server: NatsServer
) -> AsyncIterator[tuple[Hub, httpx.AsyncClient, Path]]:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "limits.yaml").write_text(GOOD)
    settings = HubSettings(
        state_dir=tmp_path / "hub",
        nats_url=nats_server.url,
        port=0,
        timing=FAST,
        policies_dir=folder,
        insecure=True,
        admin_token=ADMIN_TOKEN,
    )
    async with running_hub(settings) as h:
        assert h.endpoints is not None
        async with httpx.AsyncClient(base_url=h.endpoints.api_url, headers=ADMIN) as c:
            yield h, c, folder


async def test_a_denied_job_is_403_naming_the_policy_and_nothing_is_stored(setup) -> None:  # type: ignore[no-untyped-def]
    hub, c, _ = setup
    r = await c.post("/v1/jobs", content=job(16))
    assert r.status_code == 403
    assert "guardrail/nlp-limits" in r.json()["detail"]
    assert "16" in r.json()["detail"]
    r = await c.post("/v1/jobs", content=job(1, gpu_type="A100"))
    assert r.status_code == 403 and "A100" in r.json()["detail"]
    assert (await c.get("/v1/jobs")).json()["items"] == []
    assert (
        await c.post("/v1/jobs", content=job(1, team="vision", gpu_type="A100"))
    ).status_code == 201
    audit = (await c.get("/v1/audit")).json()
    assert [a["decision"] for a in audit] == ["admitted", "denied", "denied"]
    assert audit[-1]["policies"] == ["guardrail/nlp-limits"]


async def test_reload_is_all_or_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    hub, c, folder = setup
    before = (await c.get("/v1/policies")).json()
    assert [e["name"] for e in before["entries"]] == ["nlp-limits"]
    (folder / "broken.yaml").write_text(
        "apiVersion: orrery/v1\nkind: Guardrail\nmetadata: {name: b}\nspec: {maxGpusPerJob: lots}\n"
    )
    r = await c.post("/v1/policies:reload")
    assert r.status_code == 422
    body = r.json()
    assert "broken.yaml" in body["detail"]
    assert (await c.get("/v1/policies")).json()["digest"] == before["digest"]  # old set in force
    assert (await c.post("/v1/jobs", content=job(16))).status_code == 403
    # A valid change applies to the next submission and pass.
    (folder / "broken.yaml").unlink()
    (folder / "limits.yaml").write_text(GOOD.replace("maxGpusPerJob: 8", "maxGpusPerJob: 32"))
    r = await c.post("/v1/policies:reload")
    assert r.status_code == 200 and r.json()["changed"] is True
    assert (await c.post("/v1/jobs", content=job(16))).status_code == 201
    kinds = [a["decision"] for a in (await c.get("/v1/audit")).json() if a["kind"] == "reload"]
    assert kinds == ["changed", "refused"]


async def test_check_submits_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    hub, c, _ = setup
    r = await c.post("/v1/policies:check", json={"manifest": job(16)})
    assert r.status_code == 200
    report = r.json()
    assert report["admitted"] is False
    assert report["denials"][0]["policy"] == "guardrail/nlp-limits"
    r = await c.post("/v1/policies:check", content=job(2))
    assert r.json()["admitted"] is True
    assert (await c.get("/v1/jobs")).json()["items"] == []
    r = await c.post("/v1/policies:check", content="spec: [")
    assert r.status_code == 422


async def test_a_guardrail_max_runtime_stops_a_running_job(setup) -> None:  # type: ignore[no-untyped-def]
    hub, c, _ = setup
    assert hub.endpoints is not None
    nc = await nats.connect(hub.endpoints.nats_url)
    subjects = Subjects("rt-cluster")
    orders: list = []  # type: ignore[type-arg]

    async def on_order(msg):  # type: ignore[no-untyped-def]
        orders.append(decode_order(msg.data))

    await nc.subscribe(subjects.orders, cb=on_order)
    seq = 0

    async def beat(slices: list[SliceReport]) -> None:
        nonlocal seq
        seq += 1
        hb = Heartbeat(
            sender="s",
            seq=seq,
            cluster="rt-cluster",
            incarnation="i",
            lease_s=1.0,
            nodes=[NodeReport(name="n0", gpu_type="H100", gpus=8, free=list(range(8)))],
            slices=slices,
        )
        await nc.request(subjects.heartbeat, encode(hb), timeout=5)

    await beat([])
    job_id = (await c.post("/v1/jobs", content=job(2))).json()["id"]
    deadline = time.monotonic() + 10
    while not orders:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    a = orders[0]
    running = SliceReport(
        job=a.job,
        index=0,
        epoch=a.epoch,
        phase=SlicePhase.RUNNING,
        node="n0",
        gpus=a.gpus,
        started_at=time.time(),
    )
    while (j := (await c.get(f"/v1/jobs/{job_id}")).json())["status"]["phase"] != "Failed":
        assert time.monotonic() < deadline, j
        await beat([running])
        await asyncio.sleep(0.1)
    assert "max runtime" in j["status"]["reason"]
    # The kill goes out once the transaction that failed the job has committed: it may
    # arrive a moment after the API shows Failed.
    while not any(getattr(o, "kind", "") == "kill" and o.job == job_id for o in orders):
        assert time.monotonic() < deadline + 10, orders
        await asyncio.sleep(0.02)
    await nc.close()
