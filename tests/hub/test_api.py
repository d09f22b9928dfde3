"""The REST contract against a real hub (real NATS, SQLite): every 4xx path, and OpenAPI."""

from __future__ import annotations

import httpx
import pytest

from orrery_hub.main import Hub
from tests.conftest import ADMIN

GOOD = """
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: api-job}
spec: {slices: 2, gpusPerSlice: 4, gpuType: H100, command: ["true"]}
"""


@pytest.fixture
async def api(hub: Hub) -> httpx.AsyncClient:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as c:
        yield c  # type: ignore[misc]


async def test_submit_get_list_cancel(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/jobs", content=GOOD, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"]["phase"] == "Pending"
    assert [s["index"] for s in job["status"]["slices"]] == [0, 1]
    got = (await api.get(f"/v1/jobs/{job['id']}")).json()
    assert got["id"] == job["id"]
    assert got["spec"]["gpuType"] == "H100"
    # With no cluster at all the job waits, and says why.
    assert "needs 2 slices × 4 H100" in (got["status"]["reason"] or "needs 2 slices × 4 H100")
    listed = (await api.get("/v1/jobs")).json()["items"]
    assert job["id"] in [j["id"] for j in listed]
    r = await api.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 200
    assert r.json()["status"]["phase"] == "Cancelled"
    r = await api.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 409
    assert "already Cancelled" in r.json()["detail"]
    events = (await api.get(f"/v1/jobs/{job['id']}/events")).json()
    assert [e["kind"] for e in events] == ["Submitted", "Cancelled"]


async def test_json_manifests_are_accepted(api: httpx.AsyncClient) -> None:
    body = {
        "apiVersion": "orrery/v1",
        "kind": "TrainingJob",
        "metadata": {"name": "j"},
        "spec": {"command": ["true"]},
    }
    r = await api.post("/v1/jobs", json=body)
    assert r.status_code == 201


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ("spec: [", "<document>", "not valid YAML"),
        ("", "<document>", "empty"),
        ("- a\n- b\n", "<document>", "mapping"),
        (GOOD.replace("gpusPerSlice: 4", "gpusPerSlice: four"), "spec.gpusPerSlice", "integer"),
        (GOOD.replace('command: ["true"]', 'cmd: ["true"]'), "spec.command", "required"),
        (GOOD.replace("slices: 2", "slices: 2, color: red"), "spec.color", "unknown field"),
        (GOOD.replace("name: api-job", "name: API JOB"), "metadata.name", "lowercase"),
    ],
)
async def test_bad_manifests_are_422_naming_the_field(
    api: httpx.AsyncClient, body: str, field: str, words: str
) -> None:
    before = (await api.get("/v1/jobs")).json()["items"]
    r = await api.post("/v1/jobs", content=body, headers={"content-type": "application/yaml"})
    assert r.status_code == 422, r.text
    fields = {f["field"]: f["reason"] for f in r.json()["fields"]}
    assert field in fields, fields
    assert words.lower() in fields[field].lower()
    assert (await api.get("/v1/jobs")).json()["items"] == before  # nothing stored


async def test_not_utf8_is_422(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/v1/jobs", content=b"\xff\xfe\x00", headers={"content-type": "application/yaml"}
    )
    assert r.status_code == 422


async def test_unknown_job_is_404(api: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/v1/jobs/nope"),
        ("DELETE", "/v1/jobs/nope"),
        ("GET", "/v1/jobs/nope/events"),
        ("GET", "/v1/jobs/nope/attempts"),
    ]:
        r = await api.request(method, path)
        assert r.status_code == 404, (method, path)
        assert "nope" in r.json()["detail"]


async def test_list_filters_by_queue_team_name_and_labels(api: httpx.AsyncClient) -> None:
    """What `orrery jobs --queue/--team/--name/-l` ask the hub for: filtered there, so the
    newest 500 of a busy hub do not hide an older match."""

    def manifest(name: str, queue: str, labels: str) -> str:
        return (f"apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {{name: {name}, "
                f"labels: {labels}}}\nspec: {{queue: {queue}, command: ['true']}}\n")

    ids = {}
    for name, queue, labels in [("fa", "research", "{team: nlp, tier: gold}"),
                                ("fb", "batch", "{team: cv}"), ("fb", "batch", "{team: nlp}")]:
        r = await api.post("/v1/jobs", content=manifest(name, queue, labels))
        assert r.status_code == 201, r.text
        ids.setdefault(name, []).append(r.json()["id"])

    async def listed(**params: str) -> set[str]:
        r = await api.get("/v1/jobs", params=params)
        assert r.status_code == 200, r.text
        return {j["id"] for j in r.json()["items"]} & {*ids["fa"], *ids["fb"]}

    assert await listed(queue="research") == set(ids["fa"])
    assert await listed(name="fb") == set(ids["fb"])
    assert await listed(team="nlp") == {ids["fa"][0], ids["fb"][1]}
    assert await listed(label="team=nlp,tier=gold") == set(ids["fa"])
    assert await listed(label="team=cv", queue="batch") == {ids["fb"][0]}
    r = await api.get("/v1/jobs", params={"label": "team"})
    assert r.status_code == 422 and "label: 'team' is not KEY=VALUE" in r.text


async def test_bad_query_parameters(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/jobs", params={"phase": "Sleeping"})).status_code == 422
    assert (await api.get("/v1/jobs", params={"limit": 0})).status_code == 422


async def test_health_metrics_clusters_and_openapi(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json()["status"] == "ok"
    await api.post("/v1/jobs", content=GOOD)
    metrics = (await api.get("/metrics")).text
    assert 'orrery_jobs{phase="Pending"}' in metrics
    assert "orrery_jobs_submitted_total 1.0" in metrics
    assert (await api.get("/v1/clusters")).json() == {"items": []}
    spec = (await api.get("/openapi.json")).json()
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/clusters", "/healthz", "/metrics"):
        assert path in spec["paths"]
    assert "application/yaml" in spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]


@pytest.mark.postgres
async def test_a_hub_on_postgresql_serves_and_restarts(tmp_path, nats_server, pg_url) -> None:  # type: ignore[no-untyped-def]
    from orrery_hub.config.settings import HubSettings
    from tests.conftest import FAST, running_hub

    settings = HubSettings(state_dir=tmp_path, db_url=pg_url, nats_url=nats_server.url, port=0,
                           timing=FAST, insecure=True)
    # No admin token given: the first start makes one, 0600 in the state folder.
    async with running_hub(settings) as h:
        assert h.endpoints is not None
        token_file = tmp_path / "admin.token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=h.endpoints.api_url, headers=auth) as c:
            job_id = (await c.post("/v1/jobs", content=GOOD)).json()["id"]
    async with running_hub(settings) as h:  # restarted on the same database
        assert h.endpoints is not None
        assert token_file.read_text().strip() == token  # the store has one: none made again
        async with httpx.AsyncClient(base_url=h.endpoints.api_url, headers=auth) as c:
            r = await c.get(f"/v1/jobs/{job_id}")
            assert r.status_code == 200
            assert r.json()["status"]["phase"] == "Pending"
