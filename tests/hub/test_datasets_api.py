"""/v1/datasets against a real hub: apply (create, replace), list, get, delete; bad
manifests refused naming the field; a dataset a live job reads cannot be deleted; the
cache spokes report shows per dataset."""

from __future__ import annotations

import httpx
import pytest

from orrery.wire import CachedDataset, DatasetState, Heartbeat
from orrery_hub.main import Hub
from tests.conftest import ADMIN

C4 = """
apiVersion: orrery/v1
kind: Dataset
metadata: {name: c4-en, labels: {data-residency: eu}}
spec:
  size: 2TiB
  shards: 1024
  format: jsonl
  locations: [{uri: "s3://corpora/c4/en", endpoint: "http://10.0.0.9:8333", region: eu-west-1}]
"""
YAML = {"content-type": "application/yaml"}


@pytest.fixture
async def api(hub: Hub) -> httpx.AsyncClient:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as c:
        yield c  # type: ignore[misc]


async def test_apply_list_get_replace_delete(api: httpx.AsyncClient, hub: Hub) -> None:
    r = await api.post("/v1/datasets", content=C4, headers=YAML)
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["name"] == "c4-en" and d["sizeBytes"] == 2 * 2**40
    assert d["labels"] == {"data-residency": "eu"} and d["spec"]["shards"] == 1024
    assert [x["name"] for x in (await api.get("/v1/datasets")).json()["items"]] == ["c4-en"]

    r = await api.post("/v1/datasets", content=C4.replace("2TiB", "3TiB"), headers=YAML)
    assert r.status_code == 201
    assert (await api.get("/v1/datasets/c4-en")).json()["sizeBytes"] == 3 * 2**40

    # A spoke reports it cached: the dataset says where.
    hub.inventory.observe(
        Heartbeat(
            sender="spoke/eu-west",
            seq=1,
            cluster="eu-west",
            incarnation="i1",
            lease_s=10,
            datasets=[
                CachedDataset(
                    name="c4-en", version="1", state=DatasetState.READY, size_bytes=5, in_use=1
                )
            ],
        ),
        now=0.0,
    )
    cached = (await api.get("/v1/datasets/c4-en")).json()["cached"]
    assert cached == [
        {
            "cluster": "eu-west",
            "version": "1",
            "state": "Ready",
            "sizeBytes": 5,
            "bytesDone": 0,
            "inUse": 1,
        }
    ]

    assert (await api.delete("/v1/datasets/c4-en")).status_code == 200
    assert (await api.get("/v1/datasets/c4-en")).status_code == 404
    assert (await api.delete("/v1/datasets/c4-en")).status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [(("2TiB", "much"), "spec.size"), (("shards: 1024", "shards: -1"), "spec.shards")],
)
async def test_a_bad_dataset_is_refused_naming_the_field(
    api: httpx.AsyncClient, change: tuple[str, str], field: str
) -> None:
    r = await api.post("/v1/datasets", content=C4.replace(*change), headers=YAML)
    assert r.status_code == 422, r.text
    assert field in r.text
    assert (await api.get("/v1/datasets")).json()["items"] == []


JOB = """
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: reads-c4}
spec:
  command: ["true"]
  datasets: [{name: c4-en, mountPath: /data/c4}]
"""


async def test_a_job_naming_an_unknown_dataset_is_refused_and_a_read_one_is_kept(
    api: httpx.AsyncClient,
) -> None:
    r = await api.post("/v1/jobs", content=JOB, headers=YAML)
    assert r.status_code == 422, r.text
    assert "spec.datasets[0].name" in r.text and "no dataset 'c4-en'" in r.text
    assert (await api.get("/v1/jobs")).json()["items"] == []

    assert (await api.post("/v1/datasets", content=C4, headers=YAML)).status_code == 201
    r = await api.post("/v1/jobs", content=JOB, headers=YAML)
    assert r.status_code == 201, r.text
    job = r.json()["id"]
    r = await api.delete("/v1/datasets/c4-en")
    assert r.status_code == 409 and job in r.json()["detail"]
    assert (await api.delete(f"/v1/jobs/{job}")).status_code == 200
    assert (await api.delete("/v1/datasets/c4-en")).status_code == 200
