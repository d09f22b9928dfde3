"""Admission throughput: single ``POST /v1/jobs`` over 16 keep-alive connections (SQLite and
PostgreSQL), ``POST /v1/jobs:batch``, each compared in the same run with what the same
server answers on ``/healthz`` (the web framework's own ceiling on this machine).

Real processes: nats-server, the hub (insecure NATS, one spoke of 8 GPUs), and this process
as the client (``benchmarks/loadgen.py``: bare asyncio sockets, so the client costs little).
Jobs ask for a GPU type no cluster has: each is admitted and stored, then waits, so
scheduling passes keep running over the growing queue meanwhile.

    .venv/bin/python -m pytest -m benchmark benchmarks/bench_admission.py -s -p no:randomly
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.conftest import percentile, record
from benchmarks.loadgen import body, cpu_seconds, hammer, manifest, request
from orrery.federation import Federation, SpokeSpec, Timings

pytestmark = pytest.mark.benchmark

SECONDS = float(os.environ.get("ORRERY_BENCH_SECONDS", "8"))
CONNECTIONS = 16
PG_ADMIN = os.environ.get("ORRERY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def federation(tmp: Path, *hub_args: str) -> Federation:
    return Federation(
        tmp / "fed",
        spokes=[SpokeSpec("bench", "r1", "H100", 1, 8)],
        timings=Timings(heartbeat_s=1.0),
        insecure=True,
        hub_args=list(hub_args),
    )


def jobs_submitted(url: str, token: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}).text
    for line in text.splitlines():
        if line.startswith("orrery_jobs_submitted_total"):
            return float(line.split()[1])
    return 0.0


def measure_single(fed: Federation, label: str) -> dict[str, object]:
    assert fed.api_url is not None and fed.hub is not None
    url, token = fed.api_url, fed.admin_token
    health = request("GET", url, "/healthz", token)
    submit = request("POST", url, "/v1/jobs", token, body(manifest("bench")))
    asyncio.run(hammer(url, submit, connections=CONNECTIONS, seconds=1.0, expect=201))  # warm
    h = asyncio.run(hammer(url, health, connections=CONNECTIONS, seconds=SECONDS))
    before, cpu0 = jobs_submitted(url, token), cpu_seconds(fed.hub.pid)
    s = asyncio.run(hammer(url, submit, connections=CONNECTIONS, seconds=SECONDS, expect=201))
    cpu = (cpu_seconds(fed.hub.pid) - cpu0) / s.seconds
    stored = jobs_submitted(url, token) - before
    assert s.failures == 0 and s.answers > 0
    assert stored == s.answers  # every 201 is a stored job
    return {
        "database": label,
        "connections": CONNECTIONS,
        "seconds": round(s.seconds, 1),
        "healthz_per_s": round(h.rate),
        "admitted_jobs_per_s": round(s.rate),
        "ratio_to_healthz": round(s.rate / h.rate, 2),
        "submit_p50_ms": round(percentile(list(s.latencies), 50) * 1000, 1),
        "submit_p99_ms": round(percentile(list(s.latencies), 99) * 1000, 1),
        "hub_cpu_share": round(cpu, 2),
    }


def test_single_submissions_sqlite(tmp_path: Path) -> None:
    with federation(tmp_path) as fed:
        figures = measure_single(fed, "sqlite")
    record("admission_sqlite", figures)


@pytest.fixture
def pg_database() -> Iterator[str]:
    from sqlalchemy import create_engine, text

    name = f"orrery_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        pytest.skip(f"no PostgreSQL server at {PG_ADMIN}: {type(exc).__name__}")
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_single_submissions_postgres(tmp_path: Path, pg_database: str) -> None:
    with federation(tmp_path, "--db", pg_database) as fed:
        figures = measure_single(fed, "postgresql")
    record("admission_postgres", figures)


def test_batch_submissions(tmp_path: Path) -> None:
    per_request, connections = 1000, 4
    with federation(tmp_path) as fed:
        assert fed.api_url is not None and fed.hub is not None
        url, token = fed.api_url, fed.admin_token
        batch = request(
            "POST",
            url,
            "/v1/jobs:batch",
            token,
            body([manifest(f"b{i}") for i in range(per_request)]),
        )
        asyncio.run(hammer(url, batch, connections=1, seconds=1.0))  # warm
        before, cpu0 = jobs_submitted(url, token), cpu_seconds(fed.hub.pid)
        b = asyncio.run(hammer(url, batch, connections=connections, seconds=SECONDS))
        cpu = (cpu_seconds(fed.hub.pid) - cpu0) / b.seconds
        stored = jobs_submitted(url, token) - before
    assert b.failures == 0 and b.answers > 0
    assert stored == b.answers * per_request
    figures = {
        "manifests_per_request": per_request,
        "connections": connections,
        "seconds": round(b.seconds, 1),
        "requests": b.answers,
        "admitted_jobs_per_s": round(stored / b.seconds),
        "request_p50_ms": round(percentile(list(b.latencies), 50) * 1000, 1),
        "hub_cpu_share": round(cpu, 2),
    }
    record("admission_batch", figures)
