"""A lean HTTP/1.1 load generator for the admission benchmarks: N keep-alive connections,
each sending one request and reading its answer, over and over, for a fixed time.

Written on bare asyncio streams rather than an HTTP library so that the client costs
little CPU beside the hub on a small machine: what is measured is the hub. Also the
helpers the benchmarks share: a process's CPU seconds from /proc, and the hub's counters.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Load:
    answers: int  # responses with the expected status
    failures: int  # any other status
    seconds: float
    latencies: tuple[float, ...]

    @property
    def rate(self) -> float:
        return self.answers / self.seconds if self.seconds else 0.0


def request(method: str, url: str, path: str, token: str, body: bytes = b"") -> bytes:
    host = urlsplit(url).netloc
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _worker(
    url: str, req: bytes, expect: int, deadline: float, out: list[tuple[bool, float]]
) -> None:
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            out.append((status == expect, time.perf_counter() - t0))
    finally:
        writer.close()


async def hammer(
    url: str, req: bytes, *, connections: int = 16, seconds: float = 5.0, expect: int = 200
) -> Load:
    out: list[tuple[bool, float]] = []
    t0 = time.perf_counter()
    deadline = t0 + seconds
    await asyncio.gather(*(_worker(url, req, expect, deadline, out) for _ in range(connections)))
    took = time.perf_counter() - t0
    ok = [lat for good, lat in out if good]
    return Load(len(ok), len(out) - len(ok), took, tuple(ok))


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def manifest(name: str, *, gpu_type: str = "NONE") -> dict[str, object]:
    """A job no cluster can run (no such GPU type): it is admitted and waits, so what is
    measured is admission, with scheduling passes going on over the growing queue."""
    return {
        "apiVersion": "orrery/v1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {"gpusPerSlice": 1, "gpuType": gpu_type, "command": ["sleep", "1"]},
    }


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()
