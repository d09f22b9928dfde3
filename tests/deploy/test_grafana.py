"""The Grafana dashboard queries only metrics the hub exports, and the hub's metrics move
with what happens (an admission, a pending job in its queue)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from orrery_hub.main import Hub
from tests.conftest import ADMIN

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "orrery.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count")}


def queried(dashboard: dict[str, object]) -> set[str]:
    names: set[str] = set()
    for panel in dashboard["panels"]:  # type: ignore[attr-defined]
        for target in panel["targets"]:
            names |= set(re.findall(r"\b(orrery_[a-z0-9_]+)", target["expr"]))
    return names


def exported(text: str) -> set[str]:
    names: set[str] = set()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        names |= {fam.name + s for s in SUFFIXES.get(fam.type, ())}
        names |= {s.name for s in fam.samples}
    return names


async def test_every_metric_the_dashboard_queries_is_exported(hub: Hub) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    wanted = queried(dashboard)
    # The list: admission, queue depth, pass duration, placement latency, failovers,
    # preemptions, GPU allocation, spend.
    for name in (
        "orrery_admission_decisions_total",
        "orrery_queue_pending_jobs",
        "orrery_schedule_pass_seconds_bucket",
        "orrery_placement_latency_seconds_bucket",
        "orrery_cluster_failovers_total",
        "orrery_preemptions_total",
        "orrery_gpus",
        "orrery_team_spend",
    ):
        assert name in wanted, f"the dashboard does not chart {name}"
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as api:
        r = await api.get("/metrics")
    assert r.status_code == 200
    missing = wanted - exported(r.text)
    assert not missing, f"the dashboard queries metrics /metrics does not export: {missing}"


async def test_admission_and_queue_depth_move(hub: Hub) -> None:
    job = (
        "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: m}\n"
        'spec: {queue: research, slices: 1, gpusPerSlice: 2, command: ["true"]}\n'
    )
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as api:
        assert (await api.post("/v1/jobs", content=job)).status_code == 201
        text = (await api.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("orrery_admission_decisions_total", (("decision", "admitted"),))] == 1
    assert samples[("orrery_queue_pending_jobs", (("queue", "research"),))] == 1
    assert samples[("orrery_queue_gpus_in_use", (("queue", "research"),))] == 0
