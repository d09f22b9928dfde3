"""What ``synchronous=FULL`` costs on admission (SQLite), beside NORMAL in the same run.

Two figures per mode: the store alone (one admission transaction per job: job, slices,
event, committed — what a submit writes) and the API (POST /v1/jobs against an in-process
hub on a real nats-server, sequential, so each submit waits for its own commit).

    ./dev bench -k durability
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.conftest import percentile, record
from orrery.manifest import parse_manifest
from orrery.natsserver import NatsServer
from orrery_hub.config.settings import HubSettings
from orrery_hub.main import Hub
from orrery_hub.store import Database, database
from orrery_hub.store import jobs as jobstore

pytestmark = pytest.mark.benchmark

STORE_JOBS = 500
API_JOBS = 300
TOKEN = "bench-durability-token"
BODY = (
    "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: dur}\n"
    "spec: {slices: 2, gpusPerSlice: 1, gpuType: NONE, command: [x]}\n"
)


def store_admissions(path: Path) -> list[float]:
    db = Database.connect(f"sqlite:///{path}")
    m = parse_manifest(BODY)
    out = []
    for i in range(STORE_JOBS):
        t0 = time.perf_counter()
        with db.session() as s:
            jobstore.submit(s, m, now=float(i), checkpoint_root=path.parent)
        out.append(time.perf_counter() - t0)
    db.close()
    return out


async def api_admissions(state: Path, nats_url: str) -> list[float]:
    settings = HubSettings(
        state_dir=state,
        nats_url=nats_url,
        port=0,
        insecure=True,
        admin_token=TOKEN,
        write_rate_per_s=0,
    )
    hub = Hub(settings)
    ready = asyncio.Event()
    task = asyncio.create_task(hub.run(on_ready=lambda _e: ready.set()))
    await asyncio.wait_for(ready.wait(), 30)
    assert hub.endpoints is not None
    out = []
    try:
        async with httpx.AsyncClient(
            base_url=hub.endpoints.api_url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as api:
            for _ in range(20):  # warm up
                (await api.post("/v1/jobs", content=BODY)).raise_for_status()
            for _ in range(API_JOBS):
                t0 = time.perf_counter()
                (await api.post("/v1/jobs", content=BODY)).raise_for_status()
                out.append(time.perf_counter() - t0)
    finally:
        hub.stop()
        await task
    return out


def test_synchronous_full_cost_on_admission(tmp_path: Path) -> None:
    figures: dict[str, object] = {"store_jobs": STORE_JOBS, "api_jobs": API_JOBS}
    server = NatsServer().start()
    try:
        for mode in ("NORMAL", "FULL"):
            database.SQLITE_SYNCHRONOUS = mode
            store = store_admissions(tmp_path / mode / "store.db")
            api = asyncio.run(api_admissions(tmp_path / mode / "hub", server.url))
            key = mode.lower()
            figures[f"{key}_store_p50_ms"] = round(percentile(store, 50) * 1000, 2)
            figures[f"{key}_store_p99_ms"] = round(percentile(store, 99) * 1000, 2)
            figures[f"{key}_api_p50_ms"] = round(percentile(api, 50) * 1000, 2)
            figures[f"{key}_api_p99_ms"] = round(percentile(api, 99) * 1000, 2)
            figures[f"{key}_api_per_s"] = round(len(api) / sum(api), 1)
    finally:
        database.SQLITE_SYNCHRONOUS = "FULL"
        server.stop()
    record("durability", figures)
    assert figures["full_store_p50_ms"] is not None
