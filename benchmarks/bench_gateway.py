"""The inference gateway's added latency and its requests/s, against direct calls to the
same replicas in the same run. Real processes: two replicas (e2e/workloads/replica.py,
stdlib HTTP, answering at once with ?ms=0; then benchmarks/raw_replica.py, bare asyncio,
to show what the gateway itself passes), one ``orrery gateway`` process syncing with a
stand-in hub that serves fixed routes, and the load from this process.

    ./dev bench -k gateway

Latency: 2,000 sequential requests (one connection, kept alive), p50 and p99, direct and
through the gateway; the overhead is the difference. Throughput: 32 keep-alive
connections (2 processes x 16, benchmarks/loadgen.py: bare asyncio, so the client costs
little) for 5 s, direct to one replica and through the gateway to both. Everything shares
the machine's cores: the figures are a floor.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from benchmarks.conftest import percentile, record
from benchmarks.loadgen import cpu_seconds, hammer, request
from orrery.natsserver import free_ports
from orrery.service_resources import GatewayRoutes, Route, ServiceRoutes

pytestmark = pytest.mark.benchmark

REPLICA = Path(__file__).parent.parent / "e2e" / "workloads" / "replica.py"
SEQUENTIAL = 2000
CONCURRENCY = 32
SECONDS = 5.0
PROCESSES = 2
RAW_REPLICA = Path(__file__).parent / "raw_replica.py"


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


def stand_in_hub(routes: GatewayRoutes) -> tuple[ThreadingHTTPServer, str]:
    body = routes.model_dump_json(by_alias=True).encode()

    class Hub(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def sequential(url: str) -> list[float]:
    out = []
    with httpx.Client() as c:
        for _ in range(100):  # warm up: connections, caches
            c.get(url)
        for _ in range(SEQUENTIAL):
            t0 = time.perf_counter()
            r = c.get(url)
            out.append(time.perf_counter() - t0)
            assert r.status_code == 200
    return out


def _hammer(url: str) -> tuple[int, int, float]:
    u = urlsplit(url)
    req = request("GET", url, f"{u.path}?{u.query}", "bench")
    base = f"{u.scheme}://{u.netloc}"
    r = asyncio.run(hammer(base, req, connections=CONCURRENCY // PROCESSES, seconds=SECONDS))
    return r.answers, r.failures, r.seconds


def throughput(url: str) -> float:
    """Answers per second, ``CONCURRENCY`` connections over ``PROCESSES`` processes."""
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        runs = pool.map(_hammer, [url] * PROCESSES)
    assert sum(f for _, f, _ in runs) == 0, runs
    return sum(a for a, _, _ in runs) / max(s for _, _, s in runs)


def measure(script: Path) -> dict[str, float]:
    """Latency and throughput, direct and through a gateway, with two ``script`` replicas."""
    procs: list[subprocess.Popen[bytes]] = []
    ports = free_ports(2)
    try:
        for i, port in enumerate(ports):
            env = {**os.environ, "PORT": str(port), "ORRERY_JOB_NAME": f"r{i}", "SLOTS": "64"}
            env.pop("ORRERY_PROGRESS_FILE", None)
            procs.append(subprocess.Popen([sys.executable, str(script)], env=env))
        for port in ports:
            wait_port(port)
        routes = GatewayRoutes(
            services=[
                ServiceRoutes(
                    name="bench",
                    readiness_path="/healthz",
                    scale_to_zero=False,
                    routes=[
                        Route(job=f"r{i}", endpoint=f"127.0.0.1:{p}", cluster="local")
                        for i, p in enumerate(ports)
                    ],
                )
            ]
        )
        hub, hub_url = stand_in_hub(routes)
        with tempfile.TemporaryDirectory() as tmp:
            ready = Path(tmp) / "ready.json"
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "orrery_hub.gateway", "--hub", hub_url, "--port", "0",
                     "--ready-file", str(ready)],
                    env={**os.environ, "ORRERY_TOKEN": "stand-in"},
                )
            )
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.05)
            gateway = json.loads(ready.read_text())["url"]
        via = f"{gateway}/services/bench/work?ms=0"
        direct = f"http://127.0.0.1:{ports[0]}/work?ms=0"
        deadline = time.monotonic() + 30
        while httpx.get(via).status_code != 200:  # routes synced, replicas probed ready
            assert time.monotonic() < deadline, "the gateway never routed"
            time.sleep(0.1)
        d_lat, g_lat = sequential(direct), sequential(via)
        direct_rps = throughput(direct)
        cpu0, t0 = cpu_seconds(procs[-1].pid), time.monotonic()
        gateway_rps = throughput(via)
        gateway_cpu = (cpu_seconds(procs[-1].pid) - cpu0) / (time.monotonic() - t0)
        hub.shutdown()
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
    d50, d99 = percentile(d_lat, 50), percentile(d_lat, 99)
    g50, g99 = percentile(g_lat, 50), percentile(g_lat, 99)
    return {
        "direct_p50_ms": round(d50 * 1000, 3),
        "direct_p99_ms": round(d99 * 1000, 3),
        "gateway_p50_ms": round(g50 * 1000, 3),
        "gateway_p99_ms": round(g99 * 1000, 3),
        "overhead_p50_ms": round((g50 - d50) * 1000, 3),
        "overhead_p99_ms": round((g99 - d99) * 1000, 3),
        "direct_rps": round(direct_rps),
        "gateway_rps": round(gateway_rps),
        "gateway_cpu_share": round(gateway_cpu, 2),
        "concurrency": CONCURRENCY,
    }


def test_gateway_overhead_and_throughput() -> None:
    figures = {"stdlib_replica": measure(REPLICA), "raw_replica": measure(RAW_REPLICA),
               "load_average": os.getloadavg()[0]}
    print(json.dumps(figures, indent=1))
    record("gateway", figures)
    for f in (figures["stdlib_replica"], figures["raw_replica"]):
        assert f["gateway_rps"] > 0 and f["gateway_p50_ms"] > 0
