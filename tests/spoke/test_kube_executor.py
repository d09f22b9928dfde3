"""The kubernetes executor against an emulated API (kmock over real HTTP, see ``kmockapi``).

Each test gets its own API server; the test plays the job controller (``JobController``):
it creates the Job's pod and patches statuses, as kube-controller-manager and the kubelet
would. The executor talks to it through the official ``kubernetes`` client and a
kubeconfig with a named context.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kmock
import pytest
import yaml

from orrery.natsserver import free_port
from orrery.wire import Assignment, NodeReport
from orrery_spoke_agent.executor import LaunchError, slice_env
from orrery_spoke_agent.executor.kubernetes import CONFIG_ENV, KubeExecutor, build
from orrery_spoke_agent.executor.kubernetes import jobs as kj
from orrery_spoke_agent.executor.kubernetes.progress import digest
from orrery_spoke_agent.settings import SpokeSettings
from tests.spoke.kmockapi import JobController, KubeApi, gpu_node, tenant_pod, write_kubeconfig

NS = "orrery"
PENDING_TIMEOUT_S = 1.5
T = TypeVar("T")


@dataclass
class Cluster:
    api: KubeApi
    ctl: JobController
    kubeconfig: Path
    settings: SpokeSettings
    executors: list[KubeExecutor]

    async def executor(self) -> KubeExecutor:
        ex, nodes = await asyncio.to_thread(build, self.settings, kubeconfig=self.kubeconfig,
                                            context="emulated", namespace=NS)
        assert nodes == []
        assert isinstance(ex, KubeExecutor)
        self.executors.append(ex)
        return ex

    async def add_node(self, node: dict[str, Any]) -> None:
        await self.ctl.create("/api/v1/nodes", node)

    async def add_pod(self, pod: dict[str, Any]) -> None:
        await self.ctl.create(f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods", pod)

    def job(self, a: Assignment) -> dict[str, Any]:
        job = self.api.stored("jobs", NS, kj.job_name(a.key))
        assert job is not None, f"no Job for {a.key}"
        return job


async def eventually(check: Callable[[], Awaitable[T] | T], within: float = 10.0) -> T:
    """Poll ``check`` until it returns a truthy value (a deadline, not a sleep)."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {within}s (last: {last!r})")


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    cfg = tmp_path / "kube.yaml"
    port = free_port()
    cfg.write_text(yaml.safe_dump({
        "progressListen": f"127.0.0.1:{port}", "progressUrl": f"http://127.0.0.1:{port}",
        "pendingTimeoutS": PENDING_TIMEOUT_S, "watchTimeoutS": 2,
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "defaultImage": "ghcr.io/acme/default:1",
    }))
    monkeypatch.setenv(CONFIG_ENV, str(cfg))
    async with KubeApi() as api, kmock.Server(api) as srv:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(srv.url).rstrip("/"))
        settings = SpokeSettings(nats_url="nats://127.0.0.1:1", cluster="kube-a",
                                 state_dir=tmp_path / "spoke", heartbeat_interval_s=0.5,
                                 lease_s=4.0, kill_grace_s=1.0, insecure=True)
        c = Cluster(api, JobController(srv.client, NS), kubeconfig, settings, [])
        await c.add_node(gpu_node("gpu-a", gpus=8, region="eu-west-1", zone="eu-west-1a"))
        try:
            yield c
        finally:
            for ex in c.executors:
                await ex.close()
            api.end_watches()


def assignment(*, node: str = "gpu-a", gpus: tuple[int, ...] = (0, 1), epoch: int = 0,
               index: int = 0, image: str | None = "ghcr.io/acme/train:1.4",
               max_runtime_s: float | None = None) -> Assignment:
    return Assignment(sender="hub", seq=1, job="llama-1f2e3d", job_name="llama", index=index,
                      epoch=epoch, world_size=2, node=node, gpus=list(gpus),
                      master_addr="10.0.0.1", master_port=29500, command=["python", "train.py"],
                      image=image, env={"EPOCHS": "3"}, checkpoint_dir="/ckpt/llama",
                      max_runtime_s=max_runtime_s)


async def post(url: str, token: str, body: object) -> int:
    """What orrery.workload does, from a thread (the endpoint is the agent's)."""
    def send() -> int:
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
    return await asyncio.to_thread(send)


def slice_env_of(job: dict[str, Any]) -> dict[str, str]:
    c = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in c["env"]}


def by_name(reports: list[NodeReport] | None) -> dict[str, NodeReport]:
    return {n.name: n for n in reports or []}


# ---- capacity ------------------------------------------------------------------------------


async def test_capacity_from_nodes_with_and_without_gpu_labels(cluster: Cluster) -> None:
    await cluster.add_node(gpu_node("plain", gpus=4, product=None))  # no GFD labels
    await cluster.add_node(gpu_node("cpu-only", gpus=0, product=None))
    await cluster.add_node(gpu_node("amd", gpus=2, product=None, resource="amd.com/gpu"))
    ex = await cluster.executor()
    await eventually(lambda: len(by_name(ex.capacity())) == 3)
    nodes = by_name(ex.capacity())
    h100 = nodes["gpu-a"]
    assert (h100.gpu_type, h100.gpus, h100.gpu_memory_mib, h100.free, h100.ready) == (
        "H100", 8, 81559, list(range(8)), True)
    assert (nodes["plain"].gpu_type, nodes["plain"].gpus, nodes["plain"].gpu_memory_mib) == (
        "GPU", 4, 0)
    assert nodes["amd"].gpus == 2
    assert "cpu-only" not in nodes
    # Region and zone came from the well-known topology labels.
    assert cluster.settings.all_labels["region"] == "eu-west-1"
    assert cluster.settings.all_labels["zone"] == "eu-west-1a"


async def test_other_tenants_pods_cordon_and_notready_remove_capacity(cluster: Cluster) -> None:
    await cluster.add_pod(tenant_pod("theirs", "gpu-a", 3))
    await cluster.add_pod(tenant_pod("done", "gpu-a", 4, phase="Succeeded"))  # holds nothing
    await cluster.add_node(gpu_node("cordoned", gpus=4, cordoned=True))
    await cluster.add_node(gpu_node("sick", gpus=4, ready=False))
    ex = await cluster.executor()
    await eventually(lambda: len(by_name(ex.capacity())) == 3
                     and by_name(ex.capacity())["gpu-a"].free == [0, 1, 2, 3, 4])
    nodes = by_name(ex.capacity())
    assert nodes["cordoned"].free == []
    assert nodes["cordoned"].ready  # a cordon offers nothing new but kills nothing
    assert nodes["sick"].free == []
    assert not nodes["sick"].ready
    # Kept current by the watch: another tenant arrives, then one leaves.
    await cluster.add_pod(tenant_pod("more", "gpu-a", 2))
    await eventually(lambda: len(by_name(ex.capacity())["gpu-a"].free) == 3)
    await cluster.ctl.delete("/api/v1/namespaces/other/pods/theirs")
    await eventually(lambda: len(by_name(ex.capacity())["gpu-a"].free) == 6)


async def test_watch_lists_again_after_410_gone(cluster: Cluster) -> None:
    ex = await cluster.executor()
    await eventually(lambda: "gpu-a" in by_name(ex.capacity()))
    lists = ex.nodes.lists
    cluster.api.compact()  # history gone, every watch ended: resuming gets 410
    await cluster.add_node(gpu_node("late", gpus=2))
    await eventually(lambda: "late" in by_name(ex.capacity()))
    await eventually(lambda: ex.nodes.lists > lists)


# ---- Jobs ----------------------------------------------------------------------------------


async def test_job_spec_and_success(cluster: Cluster) -> None:
    ex = await cluster.executor()
    await eventually(lambda: "gpu-a" in by_name(ex.capacity()))
    a = assignment()
    await ex.launch(a, slice_env(a))
    job = cluster.job(a)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    assert spec["backoffLimit"] == 0
    assert pod["restartPolicy"] == "Never"
    assert c["image"] == "ghcr.io/acme/train:1.4"
    assert c["command"] == ["python", "train.py"]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    env = {e["name"]: e.get("value") for e in c["env"]}
    # No API credentials in the slice: its progress goes to the agent with its own token,
    # of which the Job records only the digest.
    assert pod["automountServiceAccountToken"] is False
    assert not any("valueFrom" in e for e in c["env"])
    assert env["ORRERY_PROGRESS_URL"].endswith(f"/v1/progress/{job['metadata']['name']}")
    token = env["ORRERY_PROGRESS_TOKEN"]
    assert job["metadata"]["annotations"][kj.A_PROGRESS_TOKEN] == digest(token)
    assert token not in json.dumps(job["metadata"])
    assert env["ORRERY_EPOCH"] == "0"
    assert env["RANK"] == "0"
    assert env["EPOCHS"] == "3"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["gpu-a"]
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    labels = job["metadata"]["labels"]
    assert (labels[kj.L_JOB], labels[kj.L_SLICE], labels[kj.L_EPOCH]) == ("llama-1f2e3d", "0", "0")
    assert kj.assignment_of(job) == a
    assert spec["activeDeadlineSeconds"] == 4  # one lease
    # The GPUs the hub assigned are not offered again (the hub subtracts the same ones).
    await eventually(lambda: by_name(ex.capacity())["gpu-a"].free == [2, 3, 4, 5, 6, 7])
    waiter = asyncio.create_task(ex.wait(a.key))
    await cluster.ctl.start_pod(job)
    # Progress, as the workload helper sends it to the agent.
    report = {"step": 40, "total_steps": 100, "metrics": {"loss": 0.5},
              "checkpoint": "/ckpt/llama/step-40", "checkpoint_step": 40, "_written": 1.0}
    assert await post(env["ORRERY_PROGRESS_URL"], token, report) == 204
    progress = await eventually(lambda: ex.progress(a.key))
    assert (progress.step, progress.checkpoint_step) == (40, 40)
    assert progress.checkpoint == "/ckpt/llama/step-40"
    await cluster.ctl.finish(job["metadata"]["name"], 0)
    outcome = await asyncio.wait_for(waiter, 10)
    assert (outcome.exit_code, outcome.killed) == (0, False)


async def test_job_failing_reports_its_exit_code(cluster: Cluster) -> None:
    ex = await cluster.executor()
    a = assignment(gpus=(0,))
    await ex.launch(a, slice_env(a))
    job = cluster.job(a)
    waiter = asyncio.create_task(ex.wait(a.key))
    await cluster.ctl.start_pod(job)
    await cluster.ctl.finish(job["metadata"]["name"], 3)
    outcome = await asyncio.wait_for(waiter, 10)
    assert (outcome.exit_code, outcome.killed) == (3, False)
    assert outcome.reason is not None
    assert "Error" in outcome.reason


@pytest.mark.parametrize(("how", "expect", "fast"), [
    ({"bind": False, "phase": "Pending",
      "unschedulable": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."},
     "unschedulable: 0/1 nodes are available", False),
    ({"phase": "Pending", "waiting": "ImagePullBackOff"}, "image: ImagePullBackOff", False),
    ({"phase": "Pending", "waiting": "InvalidImageName"}, "image: InvalidImageName", True),
])
async def test_stuck_pending_fails_with_the_reason(cluster: Cluster, how: dict[str, Any],
                                                    expect: str, fast: bool) -> None:
    ex = await cluster.executor()
    a = assignment()
    t0 = time.monotonic()
    await ex.launch(a, slice_env(a))
    await cluster.ctl.start_pod(cluster.job(a), **how)
    outcome = await asyncio.wait_for(ex.wait(a.key), 10)
    took = time.monotonic() - t0
    assert outcome.exit_code is None
    assert not outcome.killed
    assert (outcome.reason or "").startswith(expect), outcome.reason
    assert (took < PENDING_TIMEOUT_S) if fast else (took >= PENDING_TIMEOUT_S)
    # Its Job is gone: it must not start later.
    assert cluster.api.stored("jobs", NS, kj.job_name(a.key)) is None


async def test_kill_deletes_the_job_with_foreground_propagation(cluster: Cluster) -> None:
    ex = await cluster.executor()
    a = assignment()
    await ex.launch(a, slice_env(a))
    job = cluster.job(a)
    await cluster.ctl.start_pod(job)
    waiter = asyncio.create_task(ex.wait(a.key))
    await ex.terminate(a.key, 1.0, "killed by hub: moved")
    outcome = await asyncio.wait_for(waiter, 10)
    assert outcome.killed
    assert outcome.reason == "killed by hub: moved"
    assert cluster.api.stored("jobs", NS, job["metadata"]["name"]) is None
    assert cluster.api.stored_all("pods") == []
    deletes = [r for r in cluster.api["delete"] if "/jobs/" in str(r.url)]
    assert deletes
    assert deletes[-1].data["propagationPolicy"] == "Foreground"


async def test_missing_image_is_refused_for_good(cluster: Cluster, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text("watchTimeoutS: 2\n")  # no defaultImage either
    monkeypatch.setenv(CONFIG_ENV, str(plain))
    ex = await cluster.executor()
    with pytest.raises(LaunchError) as info:
        await ex.launch(assignment(image=None), {})
    assert not info.value.retryable
    assert "image" in info.value.reason


async def test_restarted_agent_adopts_current_epoch_and_deletes_stale(cluster: Cluster) -> None:
    first = await cluster.executor()
    old, new, done = assignment(epoch=0), assignment(epoch=1), assignment(index=1, gpus=(2,))
    for a in (old, new, done):
        await first.launch(a, slice_env(a))
        await cluster.ctl.start_pod(cluster.job(a))
    await cluster.ctl.finish(kj.job_name(done.key), 0)
    await first.close()  # the agent dies; its Jobs live on

    second = await cluster.executor()
    found = {(f.assignment.index, f.assignment.epoch): f for f in await second.discover()}
    assert set(found) == {(0, 1), (1, 0)}
    assert found[(0, 1)].outcome is None  # running: adopted
    ended = found[(1, 0)].outcome
    assert ended is not None
    assert ended.exit_code == 0
    assert cluster.api.stored("jobs", NS, kj.job_name(old.key)) is None  # stale: deleted
    waiter = asyncio.create_task(second.wait(new.key))
    await cluster.ctl.finish(kj.job_name(new.key), 0)
    outcome = await asyncio.wait_for(waiter, 10)
    assert outcome.exit_code == 0
    await second.release(done.key)
    await eventually(lambda: cluster.api.stored("jobs", NS, kj.job_name(done.key)) is None)


async def test_lease_renewal_moves_the_deadline_and_expiry_stops_the_slice(
        cluster: Cluster) -> None:
    ex = await cluster.executor()
    a = assignment()
    await ex.launch(a, slice_env(a))
    job = cluster.job(a)
    await cluster.ctl.start_pod(job)
    await eventually(lambda: (ex.jobs.get(NS, job["metadata"]["name"]) or {})
                     .get("status", {}).get("startTime"))
    await ex.renew_lease(time.time() + 10)  # ten seconds on: one lease past that
    deadline = cluster.job(a)["spec"]["activeDeadlineSeconds"]
    assert deadline >= 14
    # With more than half a lease left, a renewal spares the API a write.
    await eventually(lambda: (ex.jobs.get(NS, job["metadata"]["name"]) or {})
                     .get("spec", {}).get("activeDeadlineSeconds") == deadline)
    patches = len(cluster.api["patch"])
    await ex.renew_lease(time.time() + 10)
    assert len(cluster.api["patch"]) == patches
    # The agent stops renewing (dead or cut off): the job controller ends the Job.
    waiter = asyncio.create_task(ex.wait(a.key))
    await cluster.ctl.expire(cluster.job(a))
    outcome = await asyncio.wait_for(waiter, 10)
    assert outcome.killed
    assert outcome.reason is not None
    assert "lease" in outcome.reason


async def test_watches_recover_when_the_api_server_comes_back(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    cfg = tmp_path / "kube.yaml"
    cfg.write_text("watchTimeoutS: 2\n")
    monkeypatch.setenv(CONFIG_ENV, str(cfg))
    settings = SpokeSettings(nats_url="nats://127.0.0.1:1", cluster="kube-r",
                             state_dir=tmp_path / "spoke", lease_s=4.0, insecure=True)
    async with KubeApi() as api, kmock.Server(api) as srv:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(srv.url).rstrip("/"))
        controller = JobController(srv.client, NS)
        await controller.create("/api/v1/nodes", gpu_node("before", gpus=2))
        ex, _ = await asyncio.to_thread(build, settings, kubeconfig=kubeconfig,
                                        context="emulated", namespace=NS)
        assert isinstance(ex, KubeExecutor)
        try:
            await eventually(lambda: "before" in by_name(ex.capacity()))
            lists = ex.nodes.lists
            # The API server goes away (a restart): watches end, every call fails. The
            # reflectors back off and keep trying; once it answers again they list anew
            # and carry on watching.
            api.outage(True)
            await eventually(lambda: ex.nodes.errors > 0, within=20)
            api.outage(False)
            await eventually(lambda: ex.nodes.lists > lists, within=20)
            await controller.create("/api/v1/nodes", gpu_node("after", gpus=4))
            await controller.delete("/api/v1/nodes/before")
            await eventually(lambda: set(by_name(ex.capacity())) == {"after"}, within=20)
        finally:
            await ex.close()



async def test_the_workload_helper_reports_progress_to_the_agent(cluster: Cluster) -> None:
    """A slice's orrery.workload calls reach the agent's endpoint with the attempt's token;
    the executor turns them into the progress (and checkpoint) the hub hands to the next
    epoch. A wrong token, or another attempt's, is refused."""
    import os
    import sys

    ex = await cluster.executor()
    await eventually(lambda: "gpu-a" in by_name(ex.capacity()))
    a, other = assignment(), assignment(index=1, gpus=(2, 3))
    await ex.launch(a, slice_env(a))
    await ex.launch(other, slice_env(other))
    await cluster.ctl.start_pod(cluster.job(a))
    job_env = slice_env_of(cluster.job(a))
    code = ("from orrery import workload\n"
            "workload.report(step=7, total_steps=10, metrics={'loss': 0.5})\n"
            "workload.checkpoint('/ck/7.pt', step=7)\n")
    env = {**os.environ, "ORRERY_PROGRESS_URL": job_env["ORRERY_PROGRESS_URL"],
           "ORRERY_PROGRESS_TOKEN": job_env["ORRERY_PROGRESS_TOKEN"]}
    env.pop("ORRERY_PROGRESS_FILE", None)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=env,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0 and b"cannot report" not in err, err
    got = await eventually(lambda: ex.progress(a.key))
    assert (got.step, got.total_steps) == (7, 10)
    assert (got.checkpoint, got.checkpoint_step) == ("/ck/7.pt", 7)
    assert got.metrics == {"loss": 0.5}

    # Another attempt's token, no token, a forged one: 401, and nothing recorded.
    url = job_env["ORRERY_PROGRESS_URL"]
    other_token = slice_env_of(cluster.job(other))["ORRERY_PROGRESS_TOKEN"]
    for token in (other_token, "", "x" * 43):
        assert await post(url, token, {"step": 99}) == 401
    assert await post(url.replace(kj.job_name(a.key), "orrery-nope-0-0-abcdef"),
                      job_env["ORRERY_PROGRESS_TOKEN"], {"step": 99}) == 401
    assert await post(url, job_env["ORRERY_PROGRESS_TOKEN"], {"step": -1}) == 400
    assert await post(url, job_env["ORRERY_PROGRESS_TOKEN"], {"message": "x" * 70_000}) == 413
    assert (p := ex.progress(a.key)) is not None and p.step == 7
    assert ex.progress(other.key) is None

    # An endpoint it cannot reach costs the workload one warning, never its run.
    env["ORRERY_PROGRESS_URL"] = "http://127.0.0.1:1/v1/progress/x"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=env,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0
    assert err.count(b"cannot report progress") == 1


async def test_a_pod_that_leaves_its_job_is_deleted_and_the_attempt_ends(
    cluster: Cluster,
) -> None:
    ex = await cluster.executor()
    await eventually(lambda: "gpu-a" in by_name(ex.capacity()))
    a = assignment()
    await ex.launch(a, slice_env(a))
    job = cluster.job(a)
    waiter = asyncio.create_task(ex.wait(a.key))
    pod = await cluster.ctl.start_pod(job)
    name = pod["metadata"]["name"]
    # Relabelled (by whoever may patch pods): the Job controller would let it go, and the
    # Job's deadline would no longer bound it.
    await cluster.ctl.patch(f"/api/v1/namespaces/{NS}/pods/{name}", {"metadata": {
        "labels": {kj.L_ATTEMPT: "free"}, "ownerReferences": None}})
    await eventually(lambda: any(
        ((p.get("metadata") or {}).get("labels") or {}).get(kj.L_ATTEMPT) == "free"
        for p in ex.pods.items()))
    # No lease renewal needed (an agent cut off from the hub still looks): its patrol finds it.
    await eventually(lambda: ex.escapes == 1)
    await eventually(lambda: cluster.api.stored("pods", NS, name) is None)
    outcome = await asyncio.wait_for(waiter, 10)
    assert outcome.killed
    assert outcome.reason == f"killed: its pod {name} left its Job"
    # An ordinary pod of a running attempt is left alone.
    b = assignment(index=1, gpus=(2, 3))
    await ex.launch(b, slice_env(b))
    await cluster.ctl.start_pod(cluster.job(b))
    await eventually(lambda: ex._pods_of(kj.job_name(b.key)))
    await ex.renew_lease(time.time())
    assert ex.escapes == 1
