"""Every REST route, tried with no token, wrong tokens, an expired and a revoked token, and
each role: 401, 403, 404 or success exactly as the role table says — one table.

A route the table does not list (added later) is still tried without a token and must
refuse it: nothing is served anonymously but /healthz.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from orrery_hub.auth import ROLE_PERMISSIONS, Permission, Role
from orrery_hub.main import Hub
from orrery_hub.store.tokenrows import TokenRow
from tests.conftest import ADMIN

JOB = """
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: authz-job}
spec: {gpusPerSlice: 1, command: ["true"]}
"""
TEAM_A_JOB = JOB.replace("{name: authz-job}", "{name: authz-job, labels: {team: a}}")


@dataclass(frozen=True)
class Caller:
    name: str
    headers: dict[str, str]
    role: Role | None = None  # None: not authenticated (401 everywhere but /healthz)
    team: str | None = None


@dataclass
class World:
    api: httpx.AsyncClient
    hub: Hub
    callers: list[Caller] = field(default_factory=list)

    async def job(self) -> str:
        """A fresh job of team a (submitted by the admin)."""
        r = await self.api.post("/v1/jobs", content=TEAM_A_JOB, headers=ADMIN)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def token(self, role: str, team: str | None = None, ttl: float | None = None) -> Any:
        body: dict[str, Any] = {"role": role, "team": team, "name": f"{role}-{team}"}
        if ttl is not None:
            body["ttl"] = ttl
        r = await self.api.post("/v1/tokens", json=body, headers=ADMIN)
        assert r.status_code == 201, r.text
        return r.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def world(hub: Hub) -> AsyncIterator[World]:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, timeout=30) as api:
        w = World(api, hub)
        revoked = await w.token("member", "a")
        assert (await api.delete(f"/v1/tokens/{revoked['id']}", headers=ADMIN)).status_code == 200
        # An expired token, as the store holds it: expiry is checked at each call.
        expired = await w.token("admin", ttl=3600)

        def expire(s: Any) -> None:
            row = s.get(TokenRow, expired["id"])
            row.expires_at = time.time() - 1
            s.add(row)

        await hub.store.tx(expire)
        hub.auth.forget(expired["id"])
        w.callers = [
            Caller("no token", {}),
            Caller("not bearer", {"Authorization": "Basic YWRtaW46YWRtaW4="}),
            Caller("garbage", bearer("not-a-token")),
            Caller("unknown id", bearer("orr_0123456789abcdef." + "x" * 43)),
            Caller("wrong secret", bearer(f"orr_{revoked['id']}." + "y" * 43)),
            Caller("revoked", bearer(revoked["token"])),
            Caller("expired", bearer(expired["token"])),
            Caller("admin", ADMIN, Role.ADMIN),
            Caller("operator", bearer((await w.token("operator"))["token"]), Role.OPERATOR),
            Caller("member a", bearer((await w.token("member", "a"))["token"]), Role.MEMBER, "a"),
            Caller("viewer a", bearer((await w.token("viewer", "a"))["token"]), Role.VIEWER, "a"),
            Caller("member b", bearer((await w.token("member", "b"))["token"]), Role.MEMBER, "b"),
            Caller("viewer b", bearer((await w.token("viewer", "b"))["token"]), Role.VIEWER, "b"),
        ]
        yield w


Prepare = Callable[[World], Awaitable[dict[str, Any]]]


async def nothing(_: World) -> dict[str, Any]:
    return {}


async def a_job(w: World) -> dict[str, Any]:
    return {"job_id": await w.job()}


async def a_token(w: World) -> dict[str, Any]:
    return {"token_id": (await w.token("viewer", "c"))["id"]}


DATASET = """
apiVersion: orrery/v1
kind: Dataset
metadata: {name: %s}
spec: {size: 1GiB, locations: [{uri: "s3://corpora/c4", region: eu-west-1}]}
"""


async def a_dataset(w: World) -> dict[str, Any]:
    name = f"ds-{uuid.uuid4().hex[:8]}"
    r = await w.api.post("/v1/datasets", content=DATASET % name, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"name": name}


async def _name() -> dict[str, Any]:
    return {"name": "c1"}


async def _asset(_: World) -> dict[str, Any]:
    return {"name": "app.js"}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    permission: Permission | None  # None: open
    ok: int = 200
    prepare: Prepare = nothing
    team_a_job: bool = False  # a job of team a: other teams' members and viewers get 404
    body: dict[str, Any] = field(default_factory=dict)


ROUTES = [
    Route("POST", "/v1/jobs", Permission.JOBS_SUBMIT, 201, body={"content": JOB}),
    Route("GET", "/v1/jobs", Permission.JOBS_READ),
    Route("GET", "/v1/jobs/{job_id}", Permission.JOBS_READ, prepare=a_job, team_a_job=True),
    Route("DELETE", "/v1/jobs/{job_id}", Permission.JOBS_CANCEL, prepare=a_job, team_a_job=True),
    Route("GET", "/v1/jobs/{job_id}/events", Permission.JOBS_READ, prepare=a_job, team_a_job=True),
    Route(
        "GET", "/v1/jobs/{job_id}/attempts", Permission.JOBS_READ, prepare=a_job, team_a_job=True
    ),
    # A pending job has no output yet: 409 for those allowed to ask (404 for other teams).
    Route("GET", "/v1/jobs/{job_id}/logs", Permission.JOBS_LOGS, 409, prepare=a_job,
          team_a_job=True),
    Route("GET", "/v1/clusters", Permission.CLUSTERS_READ),
    Route("GET", "/v1/policies", Permission.POLICIES_READ),
    Route("POST", "/v1/policies:reload", Permission.POLICIES_ADMIN),
    Route("POST", "/v1/policies:check", Permission.POLICIES_READ, body={"content": JOB}),
    Route("GET", "/v1/usage", Permission.USAGE_READ),
    Route("GET", "/v1/audit", Permission.AUDIT_READ),
    Route(
        "POST",
        "/v1/tokens",
        Permission.TOKENS_ADMIN,
        201,
        body={"json": {"role": "viewer", "team": "c"}},
    ),
    Route("GET", "/v1/tokens", Permission.TOKENS_ADMIN),
    Route("DELETE", "/v1/tokens/{token_id}", Permission.TOKENS_ADMIN, prepare=a_token),
    Route("GET", "/metrics", Permission.CLUSTERS_READ),
    Route("GET", "/openapi.json", Permission.CLUSTERS_READ),
    Route("GET", "/healthz", None),
    # The console's page and assets hold no data (open); what they show comes from the API.
    Route("GET", "/", None),
    Route("GET", "/console/{name}", None, prepare=_asset),
    Route("GET", "/v1/queues", Permission.JOBS_READ),
    Route("GET", "/v1/services", Permission.JOBS_READ),
    Route("POST", "/v1/gateway/sync", Permission.GATEWAY_SYNC,
          body={"json": {"gateway": "g1", "intervalS": 1}}),
    # --insecure: enrollment answers the NATS URLs only; revocation has nothing to revoke.
    Route("POST", "/v1/gateways:enroll", Permission.GATEWAY_SYNC,
          body={"json": {"gateway": "g1", "csr": "unused"}}),
    Route("POST", "/v1/gateways/{name}:revoke", Permission.CLUSTERS_ADMIN, 409,
          prepare=lambda _w: _name()),
    Route("GET", "/v1/budgets", Permission.USAGE_READ),
    Route("POST", "/v1/datasets", Permission.DATASETS_WRITE, 201, body={"content": DATASET % "d"}),
    Route("GET", "/v1/datasets", Permission.DATASETS_READ),
    Route("GET", "/v1/datasets/{name}", Permission.DATASETS_READ, prepare=a_dataset),
    Route("DELETE", "/v1/datasets/{name}", Permission.DATASETS_WRITE, prepare=a_dataset),
    # Cluster identity. This hub runs --insecure, so past authorization they answer 409
    # (identity is off); what is checked here is who gets that far.
    Route("POST", "/v1/clusters/tokens", Permission.CLUSTERS_ADMIN, 409,
          body={"json": {"cluster": "c1"}}),
    Route("GET", "/v1/enrollments", Permission.CLUSTERS_READ, 409),
    Route("POST", "/v1/clusters/{name}:approve", Permission.CLUSTERS_ADMIN, 409,
          prepare=lambda _w: _name()),
    Route("POST", "/v1/clusters/{name}:revoke", Permission.CLUSTERS_ADMIN, 409,
          prepare=lambda _w: _name()),
    # Enrollment authenticates by its join token, not by an API token.
    Route("POST", "/v1/clusters:enroll", None, 409,
          body={"json": {"cluster": "c1", "token": "x", "csr": "x"}}),
    # The CA certificate is public: a joining spoke checks its pin before sending a token.
    Route("GET", "/v1/clusters:ca", None, 409),
]


def expected(route: Route, c: Caller) -> int:
    if route.permission is None:
        return route.ok
    if c.role is None:
        return 401
    if route.permission not in ROLE_PERMISSIONS[c.role]:
        return 403
    if route.team_a_job and c.team not in (None, "a"):
        return 404  # another team's job does not exist for it
    return route.ok


async def test_every_route_with_every_kind_of_caller(world: World) -> None:
    failures = []
    for route in ROUTES:
        for c in world.callers:
            params = await route.prepare(world)
            path = route.path.format(**params)
            r = await world.api.request(route.method, path, headers=c.headers, **route.body)
            want = expected(route, c)
            if r.status_code != want:
                failures.append(f"{route.method} {path} as {c.name}: {r.status_code}, want {want}")
            if r.status_code == 401:
                assert r.headers["www-authenticate"] == "Bearer"
            if r.status_code == 403:
                assert route.permission is not None and route.permission.value in r.text
    assert not failures, "\n".join(failures)


async def test_no_route_is_left_out_or_served_anonymously(world: World, hub: Hub) -> None:
    from fastapi.routing import APIRoute

    from orrery_hub.main import build_app

    listed = {(r.method, r.path) for r in ROUTES}
    for route in build_app(hub).routes:
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods - {"HEAD"}:
            path = route.path
            if (method, path) in listed:
                continue
            # A route added later: it must refuse a caller without a token all the same.
            concrete = path.replace("{", "").replace("}", "")
            r = await world.api.request(method, concrete)
            assert r.status_code >= 400, f"{method} {path} answered {r.status_code} anonymously"


async def test_denied_calls_are_audited_without_the_token(world: World) -> None:
    member_b = next(c for c in world.callers if c.name == "member b")
    garbage = "orr_0123456789abcdef." + "z" * 43
    assert (await world.api.get("/v1/audit", headers=bearer(garbage))).status_code == 401
    assert (await world.api.get("/v1/audit", headers=member_b.headers)).status_code == 403
    rows = (await world.api.get("/v1/audit", headers=ADMIN)).json()
    auth = [a for a in rows if a["kind"] == "auth"]
    assert any(
        a["decision"] == "unauthenticated" and "GET /v1/audit by anonymous" in a["detail"]
        for a in auth
    )
    assert any(
        a["decision"] == "forbidden"
        and "member-b (member)" in a["detail"]
        and "audit:read" in a["detail"]
        for a in auth
    )
    tokens = [a for a in rows if a["kind"] == "token"]
    assert {a["decision"] for a in tokens} == {"created", "revoked"}
    secret = member_b.headers["Authorization"].split(".", 1)[1]
    text = str(rows)
    assert garbage not in text and "zzzz" not in text and secret not in text


async def test_team_scoping_of_lists_submissions_and_cancels(world: World) -> None:
    by = {c.name: c for c in world.callers}
    job_a = await world.job()
    r = await world.api.post("/v1/jobs", content=JOB, headers=by["member b"].headers)
    assert r.status_code == 201
    job_b = r.json()["id"]
    assert r.json()["metadata"]["labels"] == {"team": "b"}  # bound to the token, not written
    # A label naming another team is refused, naming the field.
    r = await world.api.post("/v1/jobs", content=TEAM_A_JOB, headers=by["member b"].headers)
    assert r.status_code == 403 and "metadata.labels.team" in r.json()["detail"]
    # The operator and admin may submit for any team.
    r = await world.api.post("/v1/jobs", content=TEAM_A_JOB, headers=by["operator"].headers)
    assert r.status_code == 201 and r.json()["metadata"]["labels"]["team"] == "a"

    def ids(caller: str) -> set[str]:
        return {j["id"] for j in listing[caller]}

    listing = {}
    for name in ("admin", "operator", "member a", "viewer b"):
        r = await world.api.get("/v1/jobs", headers=by[name].headers)
        listing[name] = r.json()["items"]
    assert {job_a, job_b} <= ids("admin") and {job_a, job_b} <= ids("operator")
    assert job_a in ids("member a") and job_b not in ids("member a")
    assert ids("viewer b") == {job_b}
    # The 404 for another team's job reads exactly like the one for a job that never was.
    other = await world.api.get(f"/v1/jobs/{job_a}", headers=by["member b"].headers)
    none = await world.api.get("/v1/jobs/authz-job-000000", headers=by["member b"].headers)
    assert other.status_code == none.status_code == 404
    assert other.json()["detail"].replace(job_a, "X") == none.json()["detail"].replace(
        "authz-job-000000", "X"
    )
    # A viewer cannot cancel its own team's job; a member can; the operator can cancel any.
    assert (
        await world.api.delete(f"/v1/jobs/{job_b}", headers=by["viewer b"].headers)
    ).status_code == 403
    assert (
        await world.api.delete(f"/v1/jobs/{job_b}", headers=by["member b"].headers)
    ).status_code == 200
    assert (
        await world.api.delete(f"/v1/jobs/{job_a}", headers=by["operator"].headers)
    ).status_code == 200


def test_the_role_table_is_the_one_the_issue_states() -> None:
    """Written out, not derived: the table above computes expectations from it."""
    P = Permission
    can = {role: {p.value for p in ROLE_PERMISSIONS[role]} for role in Role}
    assert can[Role.VIEWER] == {
        "jobs:read", "jobs:logs", "clusters:read", "policies:read", "datasets:read"
    }
    assert can[Role.MEMBER] == can[Role.VIEWER] | {"jobs:submit", "jobs:cancel"}
    assert can[Role.OPERATOR] == can[Role.MEMBER] | {
        "usage:read",
        "audit:read",
        "gateway:sync",
        "datasets:write",
    }
    assert can[Role.ADMIN] == {p.value for p in P}


async def test_a_flood_of_bad_calls_is_counted_but_cannot_grow_the_audit_without_bound(
    world: World,
) -> None:
    bad = bearer("orr_0123456789abcdef." + "q" * 43)
    for _ in range(120):
        assert (await world.api.get("/v1/clusters", headers=bad)).status_code == 401
    rows = (await world.api.get("/v1/audit", headers=ADMIN)).json()
    audited = [a for a in rows if a["kind"] == "auth"]
    assert 50 <= len(audited) < 70  # the burst, and what refilled meanwhile
    metrics = (await world.api.get("/metrics", headers=ADMIN)).text
    assert 'orrery_api_denied_total{status="401"} 120.0' in metrics


async def test_metrics_open_serves_metrics_without_a_token(tmp_path, nats_server) -> None:  # type: ignore[no-untyped-def]
    from orrery_hub.config.settings import HubSettings
    from tests.conftest import ADMIN_TOKEN, FAST, running_hub

    settings = HubSettings(state_dir=tmp_path / "hub", nats_url=nats_server.url, port=0,
                           timing=FAST, insecure=True, admin_token=ADMIN_TOKEN,
                           metrics_open=True)
    async with running_hub(settings) as h:
        assert h.endpoints is not None
        async with httpx.AsyncClient(base_url=h.endpoints.api_url, timeout=30) as api:
            assert (await api.get("/metrics")).status_code == 200
            assert (await api.get("/v1/clusters")).status_code == 401  # only /metrics opens
