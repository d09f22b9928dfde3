"""Fuzz the hub's whole OpenAPI surface with schemathesis: every operation, with valid
(positive) and invalid (negative) requests, without a token and with an admin token.
Whatever arrives, the hub answers 2xx/4xx — never a 5xx — and keeps serving.

Bounded for the default suite (15 examples per operation and mode with a token, 3 without;
ORRERY_FUZZ_EXAMPLES raises it). The hub runs in a thread with its own event loop, because
schemathesis calls it synchronously over real HTTP."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from orrery.natsserver import NatsServer
from orrery_hub.config.settings import HubSettings
from orrery_hub.main import Hub
from tests.conftest import ADMIN, ADMIN_TOKEN, FAST

# Per operation and mode, with the admin token (fewer where fewer inputs exist); a call
# without a token is refused before its input is read, so a few of those suffice. The
# default suite stays short; ORRERY_FUZZ_EXAMPLES=500 fuzzes deeper.
EXAMPLES = int(os.environ.get("ORRERY_FUZZ_EXAMPLES", "15"))
ANONYMOUS_EXAMPLES = max(1, EXAMPLES // 5)


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer) -> Iterator[str]:
    state: Path = tmp_path_factory.mktemp("fuzz-hub")
    settings_ = HubSettings(
        state_dir=state,
        nats_url=nats_server.url,
        port=0,
        timing=FAST,
        insecure=True,
        admin_token=ADMIN_TOKEN,
    )
    ready = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            hub = Hub(settings_)
            box["hub"], box["loop"] = hub, asyncio.get_running_loop()

            def on_ready(e: Any) -> None:
                box["url"] = e.api_url
                ready.set()

            await hub.run(on_ready=on_ready)

        try:
            asyncio.run(main())
        except BaseException as exc:  # the test fails with why the hub stopped
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=serve, name="fuzz-hub", daemon=True)
    thread.start()
    assert ready.wait(30), "the hub did not start"
    assert "error" not in box, box.get("error")
    yield box["url"]
    box["loop"].call_soon_threadsafe(box["hub"].stop)
    thread.join(20)
    assert "error" not in box, box.get("error")


def test_no_request_makes_the_hub_fail(live_hub: str) -> None:
    spec = httpx.get(f"{live_hub}/openapi.json", headers=ADMIN, timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec)
    failures: list[str] = []
    statuses: list[int] = []
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()  # type: ignore[union-attr]  # an Err raises here: the schema is bad
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for caller in ({}, ADMIN):
                _fuzz(op, mode, caller, live_hub, failures, statuses)
    assert operations >= 10  # the whole surface was found
    assert len(statuses) >= operations * 4  # requests were made, with and without a token
    assert any(200 <= s < 300 for s in statuses) and 401 in statuses
    assert not failures, "\n".join(failures[:10])
    # And it still serves.
    assert httpx.get(f"{live_hub}/healthz", timeout=5).status_code == 200


def _fuzz(
    op: Any,
    mode: GenerationMode,
    caller: dict[str, str],
    url: str,
    failures: list[str],
    statuses: list[int],
) -> None:
    @given(case=op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES if caller else ANONYMOUS_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Any) -> None:
        r = case.call(base_url=url, headers=dict(caller), timeout=15)
        statuses.append(r.status_code)
        if r.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} -> {r.status_code}: "
                f"{r.text[:300]}\n  {case.as_curl_command()[:500]}"
            )

    try:
        call()
    except Unsatisfiable:
        pass  # no invalid request exists for an operation without inputs
