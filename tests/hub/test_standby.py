"""Two in-process hubs on one PostgreSQL database: one leads, the other serves reads and
refuses writes naming the leader; the client follows to the leader from either; when the
leader stops, the standby leads and accepts writes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from orrery.client import HubClient
from orrery.natsserver import NatsServer
from orrery_hub.config.settings import HubSettings, Timing
from tests.conftest import ADMIN, ADMIN_TOKEN, FAST, running_hub

# A leader lease long enough that a loaded machine never lets it lapse by accident: the
# handover in this test is a clean stop (the leader resigns), which needs no waiting.
TIMING = Timing(heartbeat_interval_s=0.2, lease_s=10.0, kill_grace_s=0.3, failover_timeout_s=15.0)

JOB = (
    "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: j}\n"
    "spec: {slices: 1, gpusPerSlice: 1, command: [sleep, '1']}\n"
)


def _settings(tmp: Path, name: str, db: str, nats: str) -> HubSettings:
    return HubSettings(
        state_dir=tmp / name,
        db_url=db,
        nats_url=nats,
        port=0,
        timing=TIMING,
        insecure=True,
        admin_token=ADMIN_TOKEN,
        leader_lease_s=5.0,
    )


async def _until(what: str, pred, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_standby_reads_refuses_writes_and_takes_over(
    tmp_path: Path, fresh_pg_url: str, nats_server: NatsServer
) -> None:
    async with running_hub(_settings(tmp_path, "a", fresh_pg_url, nats_server.url)) as a:
        await _until("a to lead", lambda: a.leading)
        b_cm = running_hub(_settings(tmp_path, "b", fresh_pg_url, nats_server.url))
        b = await b_cm.__aenter__()
        try:
            assert b.elector is not None and a.endpoints and b.endpoints
            await _until("b to know the leader", lambda: b.elector.leader_address is not None)
            assert not b.leading
            a_url, b_url = a.endpoints.api_url, b.endpoints.api_url
            async with httpx.AsyncClient(headers=ADMIN) as http:
                r = await http.post(
                    f"{b_url}/v1/jobs", content=JOB, headers={"content-type": "application/yaml"}
                )
                assert r.status_code == 503, r.text
                assert r.headers["x-orrery-leader"] == a_url
                assert r.json()["error"] == "NotLeader"
                assert a_url in r.json()["detail"]
                # Reads are served by the standby, from the shared database.
                assert (await http.get(f"{b_url}/v1/jobs")).status_code == 200

            def submit_via(urls: str) -> str:
                with HubClient(urls, token=ADMIN_TOKEN) as c:
                    return c.submit(JOB).id

            # The client follows the standby's redirect, and skips a hub it cannot reach.
            first = await asyncio.to_thread(submit_via, b_url)
            dead = "http://127.0.0.1:9"
            second = await asyncio.to_thread(submit_via, f"{dead},{b_url}")
            async with httpx.AsyncClient(headers=ADMIN) as http:
                ids = {j["id"] for j in (await http.get(f"{b_url}/v1/jobs")).json()["items"]}
            assert {first, second} <= ids
        except BaseException:
            await b_cm.__aexit__(None, None, None)
            raise
    # a stopped (it resigned): b leads and accepts writes.
    try:
        await _until("b to lead", lambda: b.leading)
        assert b.elector is not None and b.elector.epoch == 2
        job = await asyncio.to_thread(lambda: HubClient(b_url, token=ADMIN_TOKEN).submit(JOB))
        assert job.id
    finally:
        await b_cm.__aexit__(None, None, None)


def test_a_leader_lease_too_long_for_the_spokes_lease_is_refused(tmp_path: Path) -> None:
    from orrery.errors import InvalidInput

    with pytest.raises(InvalidInput, match="--leader-lease"):
        HubSettings(state_dir=tmp_path, timing=FAST, leader_lease_s=1.0).check()
