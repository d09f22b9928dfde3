"""Datasets end to end: real hub and spokes, a real SeaweedFS holding the data.

A job whose dataset lives in one region runs there when it has room, its slices find the
data staged at ORRERY_DATA_<NAME> and read only their shards; with that region full and
another idle the choice follows the cost model (a short wait beats staging terabytes,
a long one does not) and the explanation shows both options; an EU dataset is never
staged out of the EU even when the EU is full; a cache over its limit evicts an unused
dataset, never one in use."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.objectstore import ACCESS_KEY, SECRET_KEY, SeaweedFS, bucket, upload

from e2e.conftest import final, wait_for
from orrery.client import HubClient
from orrery.federation import Federation, SpokeSpec

pytestmark = pytest.mark.e2e

READER = Path(__file__).parent / "workloads" / "read_shards.py"
SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]

POLICIES = """
apiVersion: orrery/v1
kind: Placement
metadata: {name: eu-residency}
spec:
  match: {labels: {data-residency: eu}}
  require: {clusterLabels: {region: "eu-*"}}
---
apiVersion: orrery/v1
kind: Cost
metadata: {name: data-movement}
spec:
  delayCostPerGpuHour: 2.0
  links: [{from: "eu-*", to: "us-*", gbps: 8}]
  egress: [{from: "eu-*", to: "us-*", perGB: 0.09}]
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture
def fleet(tmp_path: Path, federation: Callable[..., Federation]) -> Callable[..., Federation]:
    def start(*specs: SpokeSpec, **env: str) -> Federation:
        pol = tmp_path / "policies"
        pol.mkdir(exist_ok=True)
        (pol / "data.yaml").write_text(POLICIES)
        return federation(
            list(specs),
            policies=pol,
            extra_env={"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, **env},
        )

    return start


EU = SpokeSpec("eu-west", "eu-west-1", "H100", 1, 4)
US = SpokeSpec("us-east", "us-east-1", "H100", 1, 4)


def dataset(
    store: SeaweedFS,
    name: str,
    *,
    shards: int = 8,
    shard_bytes: int = 100_000,
    declared: str | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """Shards in a fresh bucket (its region eu-west-1), and the Dataset manifest."""
    b = f"d-{uuid.uuid4().hex[:10]}"
    bucket(store, b)
    upload(
        store,
        b,
        {f"{name}/part-{i:03d}": bytes([65 + i % 26]) * shard_bytes for i in range(shards)},
    )
    return yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "Dataset",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {
                "size": declared or shards * shard_bytes,
                "shards": shards,
                "format": "bytes",
                "locations": [
                    {"uri": f"s3://{b}/{name}", "endpoint": store.endpoint, "region": "eu-west-1"}
                ],
            },
        }
    )


def reader_job(
    name: str,
    ds: str,
    out: Path,
    *,
    slices: int = 2,
    gpus: int = 2,
    hold: Path | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    cmd = [sys.executable, str(READER), "--out", str(out), "--dataset", ds]
    if hold is not None:
        cmd += ["--hold-until", str(hold)]
    return yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "TrainingJob",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {
                "slices": slices,
                "gpusPerSlice": gpus,
                "restartPolicy": "Slice",
                "maxRuntime": "10m",
                "command": cmd,
                "datasets": [{"name": ds, "mountPath": f"/data/{ds}"}],
            },
        }
    )


def blocker(c: HubClient, runtime: str) -> str:
    """A job taking all four eu-west GPUs for ``runtime`` (as declared; it sleeps 120 s)."""
    text = yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "TrainingJob",
            "metadata": {"name": "blocker", "labels": {"data-residency": "eu"}},
            "spec": {"gpusPerSlice": 4, "maxRuntime": runtime, "command": SLEEP},
        }
    )
    j = c.submit(text)
    wait_for(c, j.id, lambda x: x.status.phase == "Running", 60, "the blocker to run")
    assert {s.cluster for s in c.job(j.id).status.slices} == {"eu-west"}
    return j.id


def events(c: HubClient, job_id: str, kind: str) -> list[str]:
    return [e.message for e in c.events(job_id) if e.kind == kind]


def records(out: Path) -> dict[int, dict[str, Any]]:
    return {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in out.glob("slice-*.json")}


def test_a_job_runs_where_its_data_is_and_each_slice_reads_only_its_shards(
    tmp_path: Path, store: SeaweedFS, fleet: Callable[..., Federation]
) -> None:
    fed = fleet(US, EU)
    with fed.client() as c:
        c.apply_dataset(dataset(store, "corpus", shards=8, shard_bytes=200_000))
        out = tmp_path / "out"
        j = c.submit(reader_job("reads-corpus", "corpus", out))
        seen = []
        deadline = time.monotonic() + 90
        while not (done := c.job(j.id)).final and time.monotonic() < deadline:
            seen += done.status.data
            time.sleep(0.05)
        assert final(c, j.id).status.phase == "Succeeded"
        assert {s.cluster for s in c.job(j.id).status.slices} == {"eu-west"}
        # The status shows the data as it was staged, and as it stands once done (a fast
        # copy on a loaded machine may leave no poll to see it in flight).
        seen += c.job(j.id).status.data
        got = records(out)
        assert sorted(got) == [0, 1]
        assert got[0]["files"] == [f"part-{i:03d}" for i in range(0, 4)]
        assert got[1]["files"] == [f"part-{i:03d}" for i in range(4, 8)]
        assert all(r["bytes"] == 4 * 200_000 and r["all"] == 8 for r in got.values())
        assert "/spokes/eu-west/datasets/corpus/" in got[0]["root"]
        # Staging was visible in the job's status, with its bytes. The status shows the
        # cache as the spoke's heartbeats report it: the one with the last bytes may come
        # after the job's end (failed once in CI, every poll before it showing 0 bytes).
        deadline = time.monotonic() + 30
        while max((x.bytes_done for x in seen), default=0) < 1_600_000:
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
            seen += c.job(j.id).status.data
        assert seen and all(x.dataset == "corpus" and x.cluster == "eu-west" for x in seen)
        assert max(x.bytes_done for x in seen) == 1_600_000
        note = events(c, j.id, "DataPlacement")[0]
        assert note.startswith("placed on eu-west")
        assert "us-east: 1.5 MiB to stage" in note
        # The hub learns a cache's state from heartbeats: the one saying Ready may come
        # after the job's end (failed once in CI, read once: still Staging).
        deadline = time.monotonic() + 30
        while [(x.cluster, x.state) for x in c.dataset("corpus").cached] != [("eu-west", "Ready")]:
            assert time.monotonic() < deadline, c.dataset("corpus").model_dump_json()
            time.sleep(0.1)


def test_with_its_region_full_the_choice_follows_the_cost_model(
    tmp_path: Path, store: SeaweedFS, fleet: Callable[..., Federation]
) -> None:
    fed = fleet(US, EU)
    with fed.client() as c:
        # Declared 2 TiB: ~37 min and ~$198 to stage into us-east.
        c.apply_dataset(dataset(store, "big", declared="2TiB"))
        c.apply_dataset(dataset(store, "small"))
        block = blocker(c, "2m")  # eu-west busy for ~2 more minutes, as declared
        # A short wait beats staging terabytes: the big-data job waits for eu-west...
        big = c.submit(reader_job("reads-big", "big", tmp_path / "big", slices=1, gpus=4))
        j = wait_for(
            c,
            big.id,
            lambda x: x.status.waiting is not None and "us-east" in x.status.waiting.clusters,
            60,
            "a reason per cluster",
        )
        assert j.status.waiting is not None
        us = j.status.waiting.clusters["us-east"]
        assert "us-east: 2.0 TiB to stage, ~36m39s, $198 egress, GPUs free now" in us
        assert "dearer than waiting for eu-west" in us and "wait for GPUs" in us
        assert j.status.placement is not None and j.status.placement.startswith("waits for eu-west")
        # Prefetch: eu-west stages the data while the job still waits for its GPUs.
        deadline = time.monotonic() + 60
        while [(x.cluster, x.state) for x in c.dataset("big").cached] != [("eu-west", "Ready")]:
            assert time.monotonic() < deadline, c.dataset("big").model_dump_json()
            time.sleep(0.1)
        assert c.job(big.id).status.phase == "Pending"
        # ... and a job reading a small dataset goes where the GPUs are, saying both.
        small = c.submit(reader_job("reads-small", "small", tmp_path / "small", slices=1, gpus=4))
        assert final(c, small.id, 90).status.phase == "Succeeded"
        assert {s.cluster for s in c.job(small.id).status.slices} == {"us-east"}
        note = events(c, small.id, "DataPlacement")[0]
        assert (
            note.startswith("placed on us-east") and "eu-west: " in note and "wait for GPUs" in note
        )
        # Once eu-west frees up, the big-data job runs there, next to its data.
        c.cancel(block)
        assert final(c, big.id, 90).status.phase == "Succeeded"
        assert {s.cluster for s in c.job(big.id).status.slices} == {"eu-west"}


def test_eu_data_is_never_staged_out_of_the_eu_even_when_the_eu_is_full(
    tmp_path: Path, store: SeaweedFS, fleet: Callable[..., Federation]
) -> None:
    fed = fleet(US, EU)
    with fed.client() as c:
        c.apply_dataset(dataset(store, "patients", labels={"data-residency": "eu"}))
        block = blocker(c, "10h")
        # The job itself carries no residency label: the data's decides.
        j = c.submit(reader_job("reads-eu", "patients", tmp_path / "eu", slices=1, gpus=4))
        got = wait_for(
            c,
            j.id,
            lambda x: x.status.waiting is not None and "us-east" in x.status.waiting.clusters,
            60,
            "a reason per cluster",
        )
        assert got.status.waiting is not None
        assert got.status.waiting.clusters["us-east"].startswith(
            "dataset patients may not be staged here: forbidden by placement/eu-residency"
        )
        time.sleep(2)  # several passes with us-east idle
        assert c.job(j.id).status.phase == "Pending"
        assert all(x.cluster != "us-east" for x in c.dataset("patients").cached)
        assert not (fed.state / "spokes" / "us-east" / "datasets" / "patients").exists()
        c.cancel(block)
        assert final(c, j.id, 90).status.phase == "Succeeded"
        assert {s.cluster for s in c.job(j.id).status.slices} == {"eu-west"}


def test_a_cache_over_its_limit_evicts_an_unused_dataset_never_one_in_use(
    tmp_path: Path, store: SeaweedFS, fleet: Callable[..., Federation]
) -> None:
    fed = fleet(EU, ORRERY_DATA_CACHE_LIMIT="2500000")  # room for two 1 MB datasets
    release = tmp_path / "release"
    with fed.client() as c:
        for name in ("aa", "bb", "cc"):
            c.apply_dataset(dataset(store, name, shards=4, shard_bytes=250_000))
        held = c.submit(
            reader_job("holds-aa", "aa", tmp_path / "aa", slices=1, gpus=2, hold=release)
        )
        wait_for(c, held.id, lambda x: x.status.phase == "Running", 60, "aa in use")
        wait_for(c, held.id, lambda x: records(tmp_path / "aa") != {}, 60, "aa read")
        done = c.submit(reader_job("reads-bb", "bb", tmp_path / "bb", slices=1, gpus=2))
        assert final(c, done.id, 90).status.phase == "Succeeded"

        def where() -> dict[str, list[str]]:
            return {n: [x.cluster for x in c.dataset(n).cached] for n in ("aa", "bb", "cc")}

        # The cache is reported in heartbeats, which may come after the job's end.
        both = {"aa": ["eu-west"], "bb": ["eu-west"], "cc": []}
        wait_for(c, done.id, lambda _x: where() == both, 30, "aa and bb cached")
        cc = c.submit(reader_job("reads-cc", "cc", tmp_path / "cc", slices=1, gpus=2))
        assert final(c, cc.id, 90).status.phase == "Succeeded"
        # bb (unused, least recently used) made room; aa, still being read, stayed.
        after = {"aa": ["eu-west"], "bb": [], "cc": ["eu-west"]}
        wait_for(c, cc.id, lambda _x: where() == after, 30, "bb evicted, cc cached")
        assert (fed.state / "spokes" / "eu-west" / "datasets" / "aa" / "1" / "part-003").exists()
        release.touch()
        assert final(c, held.id, 60).status.phase == "Succeeded"
