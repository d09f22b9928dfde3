"""Inference services end to end: real nats-server, hub, spoke agents, gateway and replica
processes (e2e/workloads/replica.py: stdlib HTTP, 50 ms a request, 4 at a time).

- Under 24 concurrent clients a service scales from 1 replica to at least 3 within the
  panic window plus a placement, its p95 latency falls back under 600 ms and below what
  it was before the scale-up (one replica serving 24 in flight 4 at a time takes ~300 ms a
  request, and more while queued; five take ~60 ms on a quiet machine, and ~430 ms were
  seen at a load average of 10), and it scales back down once the load stops.
- A data-residency: eu service spread over two regions keeps every replica in EU
  clusters, even when the spoke holding one is SIGKILLed under load; fewer than 1% of
  requests fail meanwhile, and the lost replica is replaced in the other EU cluster.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from orrery.federation import Federation, SpokeSpec
from orrery.service_resources import ServicePublic

pytestmark = pytest.mark.e2e

REPLICA = Path(__file__).parent / "workloads" / "replica.py"
RESIDENCY = """
apiVersion: orrery/v1
kind: Placement
metadata: {name: eu-residency}
spec:
  match: {labels: {data-residency: eu}}
  require: {clusterLabels: {region: "eu-*"}}
"""


def service(name: str, **spec: Any) -> str:
    labels = spec.pop("labels", {})
    return yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "InferenceService",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "gpusPerReplica": 1,
                "readinessPath": "/healthz",
                "command": [sys.executable, str(REPLICA)],
                **spec,
            },
        }
    )


def apply(fed: Federation, text: str) -> ServicePublic:
    with fed.client() as c:
        r = c._request("POST", "/v1/services", idempotent=False, content=text.encode())
        c._raise_for(r)
        return ServicePublic.model_validate(r.json())


def get(fed: Federation, name: str) -> ServicePublic:
    with fed.client() as c:
        r = c._request("GET", f"/v1/services/{name}", idempotent=True)
        c._raise_for(r)
        return ServicePublic.model_validate(r.json())


def wait_service(
    fed: Federation, name: str, pred: Callable[[ServicePublic], bool], timeout: float, what: str
) -> ServicePublic:
    deadline = time.monotonic() + timeout
    while True:
        s = get(fed, name)
        if pred(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {s.status.model_dump_json()}")
        time.sleep(0.2)


class Load:
    """``clients`` threads, each sending GET requests through the gateway in a loop."""

    def __init__(self, url: str, clients: int, path: str) -> None:
        self.url, self.path = url, path
        self.stop_flag = threading.Event()
        self.results: list[tuple[float, float, int]] = []  # (t, latency, status)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop_flag.is_set():
                t0 = time.monotonic()
                try:
                    status = c.get(self.path).status_code
                except httpx.HTTPError:
                    status = 0
                with self.lock:
                    self.results.append((t0, time.monotonic() - t0, status))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=40)

    def since(self, t: float) -> list[tuple[float, float, int]]:
        with self.lock:
            return [r for r in self.results if r[0] >= t]


def p95(rows: list[tuple[float, float, int]]) -> float:
    lat = sorted(r[1] for r in rows)
    return lat[int(0.95 * (len(lat) - 1))]


def test_a_service_scales_up_under_load_and_back_down_after(
    federation: Callable[..., Federation], tmp_path: Path
) -> None:
    fed = federation(
        [
            SpokeSpec("eu-west", "eu-west-1", "H100", 1, 4),
            SpokeSpec("us-east", "us-east-1", "H100", 1, 4),
        ],
        gateway=True,
    )
    assert fed.gateway_url is not None
    apply(
        fed,
        service(
            "chat",
            replicas={"min": 1, "max": 6},
            autoscale={"targetConcurrency": 4, "stableWindow": "12s", "panicWindow": "2s"},
        ),
    )
    wait_service(fed, "chat", lambda s: s.status.ready >= 1, 60, "the first replica")
    with Load(fed.gateway_url, 24, "/services/chat/work?ms=50") as load:
        t0 = time.monotonic()
        s = wait_service(fed, "chat", lambda s: s.status.ready >= 3, 60, "three ready replicas")
        took = time.monotonic() - t0
        # panic window (2 s) + placement and start on a loaded 2-core machine
        assert took < 45, f"scaling to 3 took {took:.1f}s"
        scaled = time.monotonic()
        wait_service(fed, "chat", lambda s: s.status.ready >= 5, 60, "five ready replicas")
        time.sleep(3)
        settled = time.monotonic()
        time.sleep(4)
        after = load.since(settled)
        before = [r for r in load.since(t0) if r[0] < scaled]
    assert after and before
    failed = [r for r in load.results if r[2] != 200]
    assert not failed, f"{len(failed)} of {len(load.results)} requests failed"
    said = f"p95 after scaling {p95(after):.3f}s (before {p95(before):.3f}s)"
    assert p95(after) < 0.6, said
    # Lower than while one replica served, not by a set ratio: how high "before" reads
    # depends on how soon the scale-up came (0.31 s before vs 0.22 s after was seen).
    assert p95(after) < p95(before), said
    status = s.status
    assert status.replicas and all(r.endpoint for r in status.replicas if r.phase == "Ready")
    # The load stopped: back to one replica within the stable window (and some slack).
    wait_service(
        fed,
        "chat",
        lambda s: s.status.desired == 1 and len(s.status.replicas) == 1,
        90,
        "scale down to one replica",
    )


def test_an_eu_service_stays_in_the_eu_through_a_spoke_kill_under_load(
    federation: Callable[..., Federation], tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "residency.yaml").write_text(RESIDENCY)
    fed = federation(
        [
            SpokeSpec("eu-west", "eu-west-1", "H100", 1, 4),
            SpokeSpec("eu-north", "eu-north-1", "H100", 1, 4),
            SpokeSpec("us-east", "us-east-1", "H100", 1, 8),
        ],
        gateway=True,
        policies=policies,
    )
    assert fed.gateway_url is not None
    apply(
        fed,
        service(
            "eu-chat",
            labels={"data-residency": "eu", "team": "nlp"},
            replicas={"min": 2, "max": 2},
            spread={"regions": 2},
        ),
    )
    s = wait_service(fed, "eu-chat", lambda s: s.status.ready == 2, 60, "two ready replicas")
    regions = {r.region for r in s.status.replicas}
    assert regions == {"eu-west-1", "eu-north-1"}, s.status.replicas  # spread over 2 regions
    seen: list[str] = []
    with Load(fed.gateway_url, 8, "/services/eu-chat/work?ms=20") as load:
        time.sleep(2)
        fed.kill_spoke("eu-west")
        killed = time.monotonic()
        deadline = killed + 60
        while True:  # a replacement placed and ready, in the EU
            s = get(fed, "eu-chat")
            seen += [r.cluster for r in s.status.replicas if r.cluster]
            live = [r for r in s.status.replicas if r.phase == "Ready" and r.cluster != "eu-west"]
            if len(live) == 2:
                break
            assert time.monotonic() < deadline, s.status.model_dump_json()
            time.sleep(0.2)
        time.sleep(2)
    total = len(load.results)
    failed = [r for r in load.results if r[2] != 200]
    assert total > 200
    assert len(failed) < 0.01 * total, f"{len(failed)} of {total} failed: {failed[:5]}"
    assert "us-east" not in seen
    assert all(r.cluster == "eu-north" for r in s.status.replicas)
    print(
        json.dumps(
            {
                "requests": total,
                "failed": len(failed),
                "replaced_in_s": round(time.monotonic() - killed, 1),
            }
        )
    )
