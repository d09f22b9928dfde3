"""Per-token rate limit on writes: a token bucket, and the 429 it turns into."""

from __future__ import annotations

from pathlib import Path

import httpx

from orrery.natsserver import NatsServer
from orrery_hub.auth.ratelimit import RateLimiter
from orrery_hub.config.settings import HubSettings
from tests.conftest import ADMIN, ADMIN_TOKEN, FAST, running_hub

JOB = (
    "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: rl}\n"
    "spec: {gpusPerSlice: 1, command: ['true']}\n"
)


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    rl = RateLimiter(rate=2.0, burst=3)
    assert [rl.take("t", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.take("t", 100.0) == 0.5  # one write back every 1/rate seconds
    assert rl.take("u", 100.0) == 0.0  # buckets are per token
    assert rl.take("t", 100.25) == 0.25
    assert rl.take("t", 100.5) == 0.0
    assert rl.take("t", 200.0) == 0.0  # refilled, capped at the burst
    assert [rl.take("t", 200.0) for _ in range(3)][-1] > 0


async def test_writes_past_the_limit_are_429_with_retry_after_and_reads_are_not(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = HubSettings(
        state_dir=tmp_path / "hub",
        nats_url=nats_server.url,
        port=0,
        timing=FAST,
        insecure=True,
        admin_token=ADMIN_TOKEN,
        write_rate_per_s=0.01,  # one write back per 100 s: nothing refills during the test
        write_burst=2,
    )
    async with running_hub(settings) as h:
        assert h.endpoints is not None
        async with httpx.AsyncClient(base_url=h.endpoints.api_url) as api:
            r = await api.post("/v1/tokens", json={"role": "member", "team": "a"}, headers=ADMIN)
            member = {"Authorization": f"Bearer {r.json()['token']}"}
            r = await api.post("/v1/tokens", json={"role": "member", "team": "b"}, headers=ADMIN)
            other = {"Authorization": f"Bearer {r.json()['token']}"}
            for _ in range(2):
                assert (await api.post("/v1/jobs", content=JOB, headers=member)).status_code == 201
            r = await api.post("/v1/jobs", content=JOB, headers=member)
            assert r.status_code == 429
            assert 90 <= int(r.headers["retry-after"]) <= 100
            assert "rate limit" in r.json()["detail"] and r.json()["retryable"] is True
            # Reads are not limited; another token has its own bucket.
            assert (await api.get("/v1/jobs", headers=member)).status_code == 200
            assert (await api.post("/v1/jobs", content=JOB, headers=other)).status_code == 201
            # Nothing was stored for the refused write.
            jobs = (await api.get("/v1/jobs", headers=ADMIN)).json()["items"]
            assert len(jobs) == 3
