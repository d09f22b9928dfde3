"""``orrery policy check`` and ``orrery policy list``: offline, against a hub's clusters, and
through the hub's ``POST /v1/policies:check`` (a fake transport stands in for the hub)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from orrery.cli.main import app
from orrery_hub.cli import policy as policycli
from orrery_hub.policy import CheckReport

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"

JOB = """\
apiVersion: orrery/v1
kind: TrainingJob
metadata:
  name: llama-finetune
  labels: {team: nlp, data-residency: eu}
spec:
  queue: research
  slices: %d
  gpusPerSlice: 8
  maxRuntime: 12h
  command: [python, train.py]
"""

CLUSTERS = {"items": [
    {"name": "eu-west-1", "region": "eu-west", "labels": {"tier": "reserved"}, "state": "Ready",
     "nodes": 1, "gpus": {"H100": {"total": 8, "free": 8}}, "lastHeartbeat": 0.0},
    {"name": "us-east-1", "region": "us-east", "labels": {}, "state": "Ready",
     "nodes": 1, "gpus": {"H100": {"total": 8, "free": 8}}, "lastHeartbeat": 0.0},
]}

runner = CliRunner()


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    f = tmp_path / "job.yaml"
    f.write_text(JOB % 4)
    return f


def invoke(*args: str) -> Any:
    return runner.invoke(app, ["policy", *args], env={"COLUMNS": "200"})


def test_offline_check_admits_and_says_it_cannot_see_clusters(manifest: Path) -> None:
    r = invoke("check", str(manifest), "--policies", str(POLICIES))
    assert r.exit_code == 0, r.output
    assert "llama-finetune: admitted" in r.output
    assert "placement/eu-residency: requires region=eu-*" in r.output
    assert "max runtime: 12h (the job's maxRuntime)" in r.output
    assert "without a hub this check cannot tell which clusters exist" in r.output


def test_offline_check_denies_naming_each_policy(tmp_path: Path) -> None:
    f = tmp_path / "big.yaml"
    f.write_text(JOB % 16)
    r = invoke("check", str(f), "--policies", str(POLICIES))
    assert r.exit_code == 1
    assert "denied by guardrail/nlp-limits: asks for 128 GPUs; at most 64 per job" in r.output


def test_json_report(manifest: Path) -> None:
    r = invoke("check", str(manifest), "--policies", str(POLICIES), "--json")
    assert r.exit_code == 0
    report = CheckReport.model_validate(json.loads(r.stdout))
    assert report.decision == "admitted"
    assert not report.clusters_known
    assert report.gpu_types == ["A100", "H100"]
    assert report.estimated_cost.gpus == 32


def fake_hub(handler: Any) -> type[policycli.PolicyClient]:
    class Fake(policycli.PolicyClient):
        def __init__(self, base_url: str, token: str | None = None) -> None:
            super().__init__(base_url, transport=httpx.MockTransport(handler), token=token)

    return Fake


def test_policies_checked_here_against_the_hubs_clusters(
    manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        assert req.url.path == "/v1/clusters"
        return httpx.Response(200, json=CLUSTERS)

    monkeypatch.setattr(policycli, "PolicyClient", fake_hub(handler))
    r = invoke("check", str(manifest), "--policies", str(POLICIES), "--hub", "http://hub:1")
    assert r.exit_code == 0, r.output
    assert "eligible clusters: eu-west-1" in r.output
    assert ("us-east-1: forbidden by placement/eu-residency (requires region=eu-*; has "
            "region=us-east)") in r.output


def test_check_on_the_hub_posts_the_manifest(manifest: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    body = {"decision": "denied", "admitted": False,
            "denials": [{"policy": "guardrail/x", "reason": "too big"}],
            "estimatedCost": {"gpus": 32, "runtimeSeconds": 43200.0, "low": None, "high": None},
            "clustersKnown": True, "policiesDigest": "abc"}

    def handler(req: httpx.Request) -> httpx.Response:
        assert (req.method, req.url.path) == ("POST", "/v1/policies:check")
        seen.append(json.loads(req.content))
        return httpx.Response(200, json=body)

    monkeypatch.setattr(policycli, "PolicyClient", fake_hub(handler))
    r = invoke("check", str(manifest), "--hub", "http://hub:1")
    assert r.exit_code == 1
    assert seen == [{"manifest": JOB % 4}]
    assert "denied by guardrail/x: too big" in r.output


def test_list_shows_each_policy_with_source_and_hash() -> None:
    r = invoke("list", str(POLICIES))
    assert r.exit_code == 0
    assert "placement/eu-residency" in r.output
    assert "placement.yaml:3" in r.output
    assert "digest sha256:" in r.output


def test_a_bad_policy_file_is_one_clear_error_and_no_traceback(tmp_path: Path,
                                                               manifest: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: orrery/v1\nkind: Guardrail\n"
                                       "metadata: {name: g}\nspec: {maxGpusPerJob: many}\n")
    p = subprocess.run([sys.executable, "-m", "orrery.cli.main", "policy", "check",
                        str(manifest), "--policies", str(tmp_path)],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 2
    assert "Traceback" not in p.stdout + p.stderr
    assert "bad.yaml:4: spec.maxGpusPerJob" in p.stderr
