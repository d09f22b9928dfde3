"""The service controller's spread: unplaced replicas kept out of the regions a service
covers, for a while. Found by the EU e2e test: with us-east the only cluster "elsewhere"
and a residency policy forbidding it, the replacement of a killed EU replica was kept out
of the other EU region for ever (the controller cannot see policies; the scheduler can)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orrery.service_manifest import parse_service_manifest
from orrery_hub.serving.controller import SPREAD_PATIENCE_S, Replica, ServiceController

SVC = parse_service_manifest("""
apiVersion: orrery/v1
kind: InferenceService
metadata: {name: eu-chat, labels: {data-residency: eu}}
spec:
  replicas: {min: 2, max: 2}
  spread: {regions: 2}
  command: [python, serve.py]
""")


@dataclass
class Cluster:
    labels: Mapping[str, str]
    state: str = "Ready"
    last_seen: float = 0.0


@dataclass
class Inventory:
    clusters: dict[str, Cluster] = field(default_factory=dict)


@dataclass
class Hub:
    inventory: Inventory

    async def submit(self, manifest: Any) -> Any: ...
    async def cancel(self, job_id: str) -> Any: ...
    async def get_job(self, job_id: str) -> Any: ...
    def wake(self) -> None: ...


def controller() -> ServiceController:
    inv = Inventory({
        "eu-west": Cluster({"region": "eu-west-1"}, state="Lost"),
        "eu-north": Cluster({"region": "eu-north-1"}),
        "us-east": Cluster({"region": "us-east-1"}),
    })
    return ServiceController(Hub(inv), lambda f: None, clock=lambda: 0.0, heartbeat_s=1.0)


def test_an_unplaced_replica_is_kept_out_of_covered_regions_then_let_in() -> None:
    ctl = controller()
    placed = Replica(index=0, job="j0", template="t", cluster="eu-north", region="eu-north-1")
    lost = Replica(index=1, job="j1", template="t")  # requeued: no cluster yet
    key = ("eu-chat", "1")
    ctl._spread(SVC, [placed, lost], [], now=100.0)
    assert ctl.avoid[key] == frozenset({"eu-north"})  # try another region first
    ctl._spread(SVC, [placed, lost], [], now=100.0 + SPREAD_PATIENCE_S - 0.5)
    assert ctl.avoid[key] == frozenset({"eu-north"})
    ctl._spread(SVC, [placed, lost], [], now=100.0 + SPREAD_PATIENCE_S)
    assert key not in ctl.avoid  # not placed elsewhere in time: wherever it fits
    ctl._spread(SVC, [placed, lost], [], now=200.0)
    assert key not in ctl.avoid  # and it stays let in
    lost.cluster, lost.region = "eu-north", "eu-north-1"
    ctl._spread(SVC, [placed, lost], [], now=201.0)
    assert key not in ctl.avoid_since  # placed: forgotten


def test_a_new_replica_gets_the_same_patience() -> None:
    ctl = controller()
    placed = Replica(index=0, job="j0", template="t", cluster="eu-north", region="eu-north-1")
    ctl._spread(SVC, [placed], [1], now=0.0)
    assert ctl.avoid[("eu-chat", "1")] == frozenset({"eu-north"})
    ctl._spread(SVC, [placed], [1], now=SPREAD_PATIENCE_S + 1)
    assert ("eu-chat", "1") not in ctl.avoid
