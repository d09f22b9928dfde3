"""Secrets by reference: ``env: {HF_TOKEN: {secretRef: NAME}}``. The manifest, the API, the
wire and the Job annotation carry the name only; the spoke resolves it (a Kubernetes
secretKeyRef, or a file in the local spoke's --secrets-dir), and a missing secret fails the
launch naming the secret, never showing a value."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
import pytest

from orrery.errors import ManifestError
from orrery.manifest import SecretRef, parse_manifest
from orrery.wire import Assignment, SecretEnv, decode, encode
from orrery_hub.main import Hub
from orrery_hub.reconcile import split_env
from orrery_spoke_agent.executor import slice_env
from orrery_spoke_agent.executor.kubernetes import jobs as kj
from orrery_spoke_agent.executor.local import LocalExecutor
from orrery_spoke_agent.executor.local_host import cgroup_path
from tests.conftest import ADMIN

VALUE = "hf_s3cr3t-VALUE-never-shown"
JOB = """
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: secret-job}
spec:
  gpusPerSlice: 0
  command: ["true"]
  env:
    EPOCHS: "3"
    HF_TOKEN: {secretRef: hf}
    DB_PASSWORD: {secretRef: db, key: password}
"""


def test_the_manifest_holds_references_and_refuses_bad_ones() -> None:
    m = parse_manifest(JOB)
    assert m.spec.env["HF_TOKEN"] == SecretRef(secretRef="hf")
    assert m.spec.env["EPOCHS"] == "3"
    for bad, field in [
        ("{secretRef: ../etc}", "spec.env.HF_TOKEN"),
        ("{secretRef: hf, key: ../x}", "spec.env.HF_TOKEN"),
        ("{secretRef: hf, value: x}", "spec.env.HF_TOKEN"),
    ]:
        with pytest.raises(ManifestError) as err:
            parse_manifest(JOB.replace("{secretRef: hf}", bad))
        assert any(loc.startswith(field) for loc, _ in err.value.problems), err.value.problems


def test_the_wire_carries_the_reference_not_a_value() -> None:
    stored = parse_manifest(JOB).model_dump(mode="json", by_alias=True)["spec"]["env"]
    plain, refs = split_env(stored)
    assert plain == {"EPOCHS": "3"}
    assert refs == {"HF_TOKEN": SecretEnv(name="hf"),
                    "DB_PASSWORD": SecretEnv(name="db", key="password")}
    a = assignment(refs)
    assert decode(encode(a), Assignment) == a


def assignment(refs: dict[str, SecretEnv], cmd: list[str] | None = None) -> Assignment:
    return Assignment(sender="hub", seq=1, job="job-1", job_name="job", index=0, epoch=1,
                      world_size=1, node="n0", gpus=[], master_addr="127.0.0.1",
                      master_port=29555, command=cmd or ["true"], checkpoint_dir="/tmp/ck",
                      env={"EPOCHS": "3"}, secret_env=refs)


async def test_the_api_stores_and_returns_only_the_reference(hub: Hub) -> None:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as api:
        r = await api.post("/v1/jobs", content=JOB)
        assert r.status_code == 201, r.text
        got = (await api.get(f"/v1/jobs/{r.json()['id']}")).json()
        assert got["spec"]["env"]["HF_TOKEN"] == {"secretRef": "hf"}
        assert got["spec"]["env"]["DB_PASSWORD"] == {"secretRef": "db", "key": "password"}


def test_kubernetes_jobs_use_secret_key_refs_and_annotations_hold_names_only() -> None:
    a = assignment({"HF_TOKEN": SecretEnv(name="hf"),
                    "DB_PASSWORD": SecretEnv(name="db", key="password")})
    t = kj.JobTemplate(namespace="ns", cluster="c", default_image="img")
    job = kj.manifest(a, slice_env(a), t, resource=None, product=None)
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}} in env
    assert {"name": "DB_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}} in env
    assert {"name": "EPOCHS", "value": "3"} in env
    assert all("value" not in e for e in env if e["name"] in ("HF_TOKEN", "DB_PASSWORD"))
    annotations = json.dumps(job["metadata"].get("annotations", {}))
    assert "secret_env" in annotations and "hf" in annotations


@pytest.fixture
async def local(tmp_path: Path):  # type: ignore[no-untyped-def]
    secrets = tmp_path / "secrets"
    (secrets / "db").mkdir(parents=True)
    (secrets / "hf").write_text(VALUE + "\n")
    (secrets / "db" / "password").write_text("pw-" + VALUE)
    ex = LocalExecutor(tmp_path / "spoke", lease_s=30, kill_grace_s=0.5, secrets_dir=secrets)
    await ex.renew_lease(time.time())
    yield ex
    await ex.close()
    parent = cgroup_path(tmp_path / "spoke")
    if parent is not None and parent.exists():
        parent.rmdir()


async def test_a_local_slice_gets_the_value_from_the_secrets_folder(local: LocalExecutor,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    code = (f"import os, json; open({str(out)!r}, 'w').write(json.dumps("
            "{k: os.environ.get(k) for k in ['HF_TOKEN', 'DB_PASSWORD', 'EPOCHS']}))")
    a = assignment({"HF_TOKEN": SecretEnv(name="hf"),
                    "DB_PASSWORD": SecretEnv(name="db", key="password")},
                   [sys.executable, "-c", code])
    await local.launch(a, slice_env(a))
    outcome = await asyncio.wait_for(local.wait(a.key), 20)
    assert outcome.exit_code == 0
    assert json.loads(out.read_text()) == {"HF_TOKEN": VALUE, "DB_PASSWORD": "pw-" + VALUE,
                                           "EPOCHS": "3"}
    # What the spoke keeps of the order names the secret, not its value.
    kept = (tmp_path / "spoke" / "slices" / "job-1" / "0" / "1" / "assignment.json").read_text()
    assert VALUE not in kept and '"hf"' in kept


async def test_a_missing_secret_fails_the_launch_naming_it(local: LocalExecutor) -> None:
    from orrery_spoke_agent.executor.base import LaunchError

    a = assignment({"WANDB_API_KEY": SecretEnv(name="wandb")})
    with pytest.raises(LaunchError) as err:
        await local.launch(a, slice_env(a))
    assert "secret 'wandb'" in err.value.reason and "WANDB_API_KEY" in err.value.reason
    assert err.value.retryable is False  # the job's configuration: counts toward maxRetries
    no_dir = LocalExecutor(local.state_dir / "other", lease_s=30, kill_grace_s=0.5)
    with pytest.raises(LaunchError, match="--secrets-dir"):
        await no_dir.launch(a, slice_env(a))
    await no_dir.close()
