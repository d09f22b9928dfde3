"""The kubernetes executor's pure rules (``capacity``, ``jobs``) and its settings
and client errors: plain dicts in, values out, no API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orrery.errors import InvalidInput, ManifestError
from orrery.wire import Assignment, SliceKey
from orrery_spoke_agent.executor.kubernetes import capacity as capa
from orrery_spoke_agent.executor.kubernetes import jobs as kj
from orrery_spoke_agent.executor.kubernetes.config import api_client, load_config
from tests.spoke.kmockapi import gpu_node, tenant_pod


def a(**kw: Any) -> Assignment:
    base: dict[str, Any] = {"sender": "hub", "seq": 1, "job": "Job_With.Odd/Chars" * 3,
                            "job_name": "j", "index": 3, "epoch": 12, "world_size": 4,
                            "node": "n1", "gpus": [0, 1], "master_addr": "x",
                            "master_port": 1, "command": ["true"], "checkpoint_dir": "/c"}
    return Assignment(**{**base, **kw})


@pytest.mark.parametrize(("value", "count"), [("4", 4), (8, 8), ("2000m", 2), ("junk", 0)])
def test_quantities(value: object, count: int) -> None:
    assert capa.quantity(value) == count


@pytest.mark.parametrize(("product", "family"), [
    ("NVIDIA-H100-80GB-HBM3", "H100"), ("NVIDIA-A100-SXM4-40GB", "A100"),
    ("Tesla-T4", "T4"), ("NVIDIA-L4", "L4")])
def test_gfd_products_become_families(product: str, family: str) -> None:
    assert capa.product_type(product) == family


def test_free_indices_keep_own_and_drop_others() -> None:
    node = capa.node_info(gpu_node("n", gpus=8), ["nvidia.com/gpu"])
    assert capa.free_indices(node, own={0, 1}, others=3) == [2, 3, 4]
    assert capa.free_indices(node, own=set(), others=9) == []
    sick = capa.node_info(gpu_node("n", gpus=8, ready=False), ["nvidia.com/gpu"])
    assert capa.free_indices(sick, own=set(), others=0) == []


def test_pod_requests_count_init_containers_the_scheduler_s_way() -> None:
    pod = tenant_pod("p", "n", 2)
    pod["spec"]["initContainers"] = [{"name": "i", "image": "x", "resources": {
        "requests": {"nvidia.com/gpu": "3"}}}]
    assert capa.pod_gpu_request(pod, "nvidia.com/gpu") == 3
    assert capa.pod_holds(pod)
    assert not capa.pod_holds(tenant_pod("q", "n", 1, phase="Failed"))
    del pod["spec"]["nodeName"]
    assert not capa.pod_holds(pod)  # unbound: on no node yet


def test_job_names_are_dns_labels_and_unique_per_attempt() -> None:
    names = {kj.job_name(a(epoch=e).key) for e in range(50)}
    assert len(names) == 50
    for n in names:
        assert len(n) <= 63
        assert n == n.lower()
        assert all(ch.isalnum() or ch == "-" for ch in n)
    for value in kj.labels("c", a().key).values():
        assert len(value) <= 63


def test_deadline_is_one_lease_on_and_never_past_max_runtime() -> None:
    assert kj.deadline_s(0, 10, None) == 10
    assert kj.deadline_s(12.2, 10, None) == 23
    assert kj.deadline_s(12.2, 10, 15) == 15


def _job(cond: str | None = None, reason: str | None = None, start: str | None = None
         ) -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": start} if start else {}
    if cond:
        status["conditions"] = [{"type": cond, "status": "True", "reason": reason}]
    return {"metadata": {"name": "j"}, "spec": {}, "status": status}


def test_judge_tells_max_runtime_from_a_lapsed_lease() -> None:
    job = _job("Failed", "DeadlineExceeded", start="2026-01-01T00:00:00Z")
    t0 = kj.timestamp("2026-01-01T00:00:00Z")
    assert t0 is not None
    lapsed = kj.judge(job, [], now=t0 + 30, launched_at=t0, pending_timeout_s=60,
                      stop_reason=None, max_runtime_s=3600)
    assert lapsed is not None
    assert lapsed.killed
    over = kj.judge(job, [], now=t0 + 3600, launched_at=t0, pending_timeout_s=60,
                    stop_reason=None, max_runtime_s=3600)
    assert over is not None
    assert not over.killed
    assert (over.reason or "").startswith("maxRuntime exceeded")


def test_judge_waits_while_pending_within_the_timeout() -> None:
    assert kj.judge(_job(), [], now=10, launched_at=0, pending_timeout_s=60,
                    stop_reason=None, max_runtime_s=None) is None
    late = kj.judge(_job(), [], now=61, launched_at=0, pending_timeout_s=60,
                    stop_reason=None, max_runtime_s=None)
    assert late is not None
    assert (late.reason or "").startswith("pending")


def test_config_file_refuses_unknown_fields(tmp_path: Path) -> None:
    bad = tmp_path / "k.yaml"
    bad.write_text("pendingTimeoutS: 5\ntolerationz: []\n")
    with pytest.raises(ManifestError) as info:
        load_config(bad)
    assert "tolerationz" in str(info.value)
    good = tmp_path / "ok.yaml"
    good.write_text("gpuResources: [amd.com/gpu]\npendingTimeoutS: 5\n")
    assert load_config(good).gpu_resources == ["amd.com/gpu"]


def test_client_errors_name_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(InvalidInput, match="in-cluster config"):
        api_client(None, None)
    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    with pytest.raises(InvalidInput, match="--kubeconfig"):
        api_client(kc, "nowhere")


def test_in_cluster_config_uses_the_service_account(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.config import incluster_config

    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token-123")
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    client = api_client(None, None)
    conf = client.configuration
    assert conf.host == "https://10.96.0.1:443"
    assert conf.ssl_ca_cert == str(ca)
    assert "sa-token-123" in str(conf.api_key)


@pytest.mark.parametrize(("reason", "infra"), [("Evicted", True),
                                                ("OutOfnvidia.com/gpu", True),
                                                ("Shutdown", True), ("Whatever", False)])
def test_a_pod_failed_by_its_node_is_an_infrastructure_failure(reason: str,
                                                                infra: bool) -> None:
    pod = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
           "status": {"phase": "Failed", "reason": reason, "message": "node trouble"}}
    o = kj.judge(_job(), [pod], now=5, launched_at=0, pending_timeout_s=60,
                 stop_reason=None, max_runtime_s=None)
    assert o is not None
    assert o.exit_code is None
    assert (o.reason or "").startswith("node lost") == infra, o.reason


def test_a_pod_is_matched_to_its_job_by_name_and_escapes_when_relabelled() -> None:
    key = SliceKey(job="llama-1f2e3d", index=0, epoch=2)
    name = kj.job_name(key)
    names = {name: key}
    assert kj.owner_by_name(f"{name}-ab1c2", names) == name
    assert kj.owner_by_name(f"{name}-ab1c2x", names) is None  # not a generated suffix
    assert kj.owner_by_name("orrery-other-0-1-abcdef-ab1c2", names) is None
    pod = {"metadata": {"name": f"{name}-ab1c2", "labels": kj.labels("kube-a", key),
                        "ownerReferences": [{"kind": "Job", "name": name, "controller": True}]}}
    assert not kj.escaped(pod, name, "kube-a")
    relabelled = {"metadata": {**pod["metadata"],
                               "labels": {**kj.labels("kube-a", key), kj.L_ATTEMPT: "free"}}}
    assert kj.escaped(relabelled, name, "kube-a")
    released = {"metadata": {**pod["metadata"], "ownerReferences": []}}
    assert kj.escaped(released, name, "kube-a")


def test_a_staged_dataset_is_mounted_read_only_at_its_mount_path() -> None:
    from orrery.wire import DataMount

    m = DataMount(
        name="c4-en", version="1", uri="s3://b/c4", size_bytes=1, mount_path="/data/c4"
    )
    t = kj.JobTemplate(namespace="ns", cluster="c", default_image="img")
    env = {"ORRERY_DATA_C4_EN": "/var/lib/orrery/datasets/c4-en/1", "ORRERY_DATA_SHARDS": "0:4"}
    job = kj.manifest(a(datasets=[m]), env, t, resource=None, product=None)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["volumes"] == [
        {
            "name": "orrery-data-0",
            "hostPath": {"path": "/var/lib/orrery/datasets/c4-en/1", "type": "Directory"},
        }
    ]
    assert container["volumeMounts"] == [
        {"name": "orrery-data-0", "mountPath": "/data/c4", "readOnly": True}
    ]
    got = {e["name"]: e.get("value") for e in container["env"]}
    assert got["ORRERY_DATA_C4_EN"] == "/data/c4" and got["ORRERY_DATA_SHARDS"] == "0:4"
