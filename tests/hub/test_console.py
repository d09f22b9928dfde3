"""The web console's page, assets and read-only routes against a real in-process hub."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from orrery_hub.console.views import budgets_view, queues_view
from orrery_hub.main import Hub
from orrery_hub.policy.match import AnyOf
from orrery_hub.policy.policyset import BudgetRule
from orrery_hub.scheduler import QueueConfig
from tests.conftest import ADMIN


def job(name: str, *, queue: str, priority: int = 0, gpus: int = 4) -> str:
    return (
        "apiVersion: orrery/v1\nkind: TrainingJob\n"
        f"metadata: {{name: {name}}}\n"
        f"spec: {{queue: {queue}, priority: {priority}, slices: 1, gpusPerSlice: {gpus}, "
        'gpuType: H100, command: ["true"]}\n'
    )


@pytest.fixture
async def anon(hub: Hub) -> httpx.AsyncClient:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url) as c:
        yield c  # type: ignore[misc]


async def test_page_and_assets_load_from_the_hub_alone(anon: httpx.AsyncClient) -> None:
    page = await anon.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "/console/app.js" in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "css"), ("favicon.svg", "svg")):
        r = await anon.get(f"/console/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"], name
        # Air-gapped: nothing the page loads may come from elsewhere.
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", r.text), name
    assert (await anon.get("/console/../service.py")).status_code == 404
    assert (await anon.get("/console/secrets.txt")).status_code == 404
    # The data routes need a token like the rest of the API.
    assert (await anon.get("/v1/queues")).status_code == 401
    assert (await anon.get("/v1/stream")).status_code == 401


async def test_queues_list_pending_jobs_in_offer_order(anon: httpx.AsyncClient) -> None:
    ids = {}
    for name, prio in (("low", 0), ("high", 10), ("low2", 0)):
        r = await anon.post(
            "/v1/jobs", content=job(name, queue="research", priority=prio), headers=ADMIN
        )
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    r = await anon.get("/v1/queues", headers=ADMIN)
    assert r.status_code == 200
    research = next(q for q in r.json()["items"] if q["name"] == "research")
    assert [p["id"] for p in research["pending"]] == [ids["high"], ids["low"], ids["low2"]]
    assert [p["position"] for p in research["pending"]] == [1, 2, 3]
    assert research["pending"][0]["gpus"] == 4
    assert research["gpusInUse"] == 0 and research["configured"] is False
    b = await anon.get("/v1/budgets", headers=ADMIN)
    assert b.status_code == 200 and b.json()["items"] == []


async def test_stream_announces_a_change(anon: httpx.AsyncClient) -> None:
    async def first_event() -> str:
        async with anon.stream("GET", "/v1/stream", headers=ADMIN) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    return line
        return ""

    assert await asyncio.wait_for(first_event(), 10) == "event: change"


def test_queues_view_guarantee_borrowing_and_fair_share() -> None:
    from orrery.resources import JobPublic

    def running(queue: str, gpus: int) -> JobPublic:
        return JobPublic.model_validate(
            {
                "id": f"{queue}-{gpus}",
                "metadata": {},
                "spec": {"queue": queue},
                "status": {
                    "phase": "Running",
                    "createdAt": 1.0,
                    "slices": [{"index": 0, "phase": "Running", "epoch": 1, "attempts": 1,
                                "gpus": list(range(gpus))}],
                },
            }
        )

    configs = [
        QueueConfig("a", weight=3.0, guaranteed=4, cohort="ml"),
        QueueConfig("b", weight=1.0, guaranteed=8, cohort="ml"),
    ]
    view = {q["name"]: q for q in queues_view(configs, [], [running("a", 8), running("b", 4)])}
    assert view["a"]["gpusInUse"] == 8 and view["a"]["borrowing"] == 4
    assert view["b"]["borrowing"] == 0
    assert view["a"]["fairShareGpus"] == 9.0 and view["b"]["fairShareGpus"] == 3.0


def test_budgets_view_spend_against_limit_per_matching_team() -> None:
    rule = BudgetRule("prices", AnyOf.of("nlp*"), "month", 100.0, "hold")
    rows = budgets_view([rule], {("month", "nlp-a"): 25.0, ("month", "cv"): 5.0}, ["nlp-a", "cv"])
    assert rows == [
        {"policy": "prices", "team": "nlp-a", "period": "month", "limit": 100.0,
         "action": "hold", "spent": 25.0, "fraction": 0.25}
    ]
    # A team that spent nothing yet still shows its budget when named plainly.
    plain = BudgetRule("prices", AnyOf.of("cv"), "day", 10.0, "deny")
    assert budgets_view([plain], {}, [])[0]["spent"] == 0.0
