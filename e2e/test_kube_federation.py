"""Two Kubernetes spokes, end to end: every part a real process, only the clusters emulated.

- nats-server and the hub (``python -m orrery_hub``), started by ``orrery.federation``;
- per cluster, an emulated Kubernetes API (``python -m tests.spoke.kmockapi``: kmock over
  real HTTP, with a stand-in job controller that starts a pod for every Job) and a spoke
  agent, ``python -m orrery_spoke_agent --executor kubernetes --kubeconfig FILE``.

Cluster A has one GPU; cluster B two, one of them held by another tenant's pod, so the
hub must spread a 2-slice job over both. The test checks A's Job lease is being renewed,
then kills cluster A (its API and its agent); the hub declares A lost, and once the other
tenant's pod on B has ended, the lost slice runs on B at a new epoch and the job succeeds.
The test plays each container's exit (there are no kubelets).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from tests.spoke.kmockapi import container_status, gpu_node, tenant_pod, write_kubeconfig

from orrery.federation import Federation, Timings

pytestmark = pytest.mark.e2e

NS = "orrery"
ROOT = Path(__file__).resolve().parents[1]
TIMINGS = Timings(heartbeat_s=0.25, lease_s=4.0, failover_s=6.0, kill_grace_s=0.5, backoff_s=0.1)
T = TypeVar("T")


def eventually(check: Callable[[], T | None], within: float, what: str) -> T:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.1)


class EmulatedCluster:
    """One emulated API server process and the spoke agent process that manages it."""

    def __init__(self, name: str, root: Path, spec: dict[str, Any]) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True)
        (self.dir / "cluster.json").write_text(json.dumps(spec))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.api: Any = None
        self.url = ""

    def _spawn(
        self, args: list[str], log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(self.dir / log, "ab") as out:
            p = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        self.procs.append(p)
        return p

    def start_api(self) -> None:
        ready = self.dir / "api.json"
        self._spawn(
            [
                sys.executable,
                "-m",
                "tests.spoke.kmockapi",
                "--nodes",
                str(self.dir / "cluster.json"),
                "--ready-file",
                str(ready),
                "--namespace",
                NS,
            ],
            "api.log",
        )
        eventually(ready.exists, 20, f"{self.name}'s API")
        self.url = json.loads(ready.read_text())["url"]
        from kubernetes import config

        self.kubeconfig = write_kubeconfig(self.dir / "kubeconfig", self.url)
        self.api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig), context="emulated"
        )

    def start_spoke(self, nats_url: str, hub_key: Path) -> None:
        cfg = self.dir / "kube-executor.yaml"
        cfg.write_text(yaml.safe_dump({"pendingTimeoutS": 60, "watchTimeoutS": 5}))
        t = TIMINGS
        self._spawn(
            [
                sys.executable,
                "-m",
                "orrery_spoke_agent",
                "--nats",
                nats_url,
                "--cluster",
                self.name,
                "--executor",
                "kubernetes",
                "--kubeconfig",
                str(self.kubeconfig),
                "--context",
                "emulated",
                "--namespace",
                NS,
                "--state",
                str(self.dir / "state"),
                "--heartbeat-interval",
                str(t.heartbeat_s),
                "--lease",
                str(t.lease_s),
                "--kill-grace",
                str(t.kill_grace_s),
                # Enrolled (TLS NATS, its own subjects only); orders verified against the
                # hub's key pinned at enrollment, the same one as this file.
                "--hub-key",
                str(hub_key),
            ],
            "spoke.log",
            env={"ORRERY_KUBE_EXECUTOR_CONFIG": str(cfg)},
        )

    # ---- reading and playing the cluster --------------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        from kubernetes import client

        raw: Any = client.BatchV1Api(self.api).list_namespaced_job(NS, _preload_content=False)
        return list(json.loads(raw.data)["items"])

    def slice_jobs(self) -> dict[tuple[int, int], dict[str, Any]]:
        out = {}
        for j in self.jobs():
            labels = j["metadata"]["labels"]
            out[(int(labels["orrery.dev/slice"]), int(labels["orrery.dev/epoch"]))] = j
        return out

    def pod_running(self, job: dict[str, Any]) -> bool:
        from kubernetes import client

        name = f"{job['metadata']['name']}-x1y2z"
        try:
            raw: Any = client.CoreV1Api(self.api).read_namespaced_pod(name, NS,
                                                                      _preload_content=False)
        except client.ApiException:
            return False
        return bool(json.loads(raw.data)["status"].get("phase") == "Running")

    def exit(self, job: dict[str, Any], code: int) -> None:
        """The slice's container exits with ``code``; the job controller records it."""
        from kubernetes import client

        name = job["metadata"]["name"]
        term = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        client.CoreV1Api(self.api).patch_namespaced_pod_status(
            f"{name}-x1y2z",
            NS,
            {
                "status": {
                    "phase": "Succeeded" if code == 0 else "Failed",
                    "containerStatuses": [container_status({"terminated": term})],
                }
            },
        )
        client.BatchV1Api(self.api).patch_namespaced_job_status(
            name,
            NS,
            {
                "status": {
                    "active": 0,
                    "succeeded": int(code == 0),
                    "conditions": [
                        {"type": "Complete" if code == 0 else "Failed", "status": "True"}
                    ],
                }
            },
        )

    def delete_pod(self, namespace: str, name: str) -> None:
        from kubernetes import client

        client.CoreV1Api(self.api).delete_namespaced_pod(name, namespace)

    def kill(self) -> None:
        """The whole cluster stops answering: its API server and its agent die."""
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()


def output(c: Any, job_id: str, **kw: Any) -> bytes | None:
    """The job's output, or None while the agent has not seen the pod yet (a 410)."""
    from orrery.errors import Gone

    try:
        return b"".join(c.logs(job_id, **kw)) or None
    except Gone:
        return None


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Federation, EmulatedCluster, EmulatedCluster]]:
    fed = Federation(tmp_path / "fed", spokes=[], timings=TIMINGS)
    a = EmulatedCluster("kube-a", tmp_path, {"nodes": [gpu_node("a-gpu-0", gpus=1)]})
    b = EmulatedCluster(
        "kube-b",
        tmp_path,
        {
            "nodes": [gpu_node("b-gpu-0", gpus=2)],
            "tenants": [tenant_pod("someone-else", "b-gpu-0", 1)],
        },
    )
    try:
        fed.start()
        for c in (a, b):
            c.start_api()
            assert fed.nats is not None
            fed.enroll(c.name, {}, c.dir / "state")
            c.start_spoke(fed.nats.url, fed.state / "hub" / "identity" / "orders.pub")
        yield fed, a, b
    finally:
        for c in (a, b):
            c.stop()
        fed.stop()


def test_a_lost_kubernetes_cluster_s_slice_moves_and_the_job_succeeds(
    world: tuple[Federation, EmulatedCluster, EmulatedCluster],
) -> None:
    fed, a, b = world
    with fed.client() as c:
        eventually(
            lambda: {x.name for x in c.clusters() if x.state == "Ready"} >= {"kube-a", "kube-b"},
            30,
            "both clusters Ready",
        )
        free = {x.name: x for x in c.clusters()}
        assert free["kube-b"].model_dump()["gpus"]["H100"] == {"total": 2, "free": 1}
        job = c.submit(
            yaml.safe_dump(
                {
                    "apiVersion": "orrery/v1",
                    "kind": "TrainingJob",
                    "metadata": {"name": "kube-e2e"},
                    "spec": {
                        "slices": 2,
                        "gpusPerSlice": 1,
                        "restartPolicy": "Slice",
                        "maxRetries": 3,
                        "image": "ghcr.io/acme/train:1.4",
                        "command": ["python", "train.py"],
                    },
                }
            )
        )
        # One slice per cluster: B has room for one only while the other tenant runs.
        on_a = eventually(lambda: a.slice_jobs(), 30, "a Job on kube-a")
        on_b = eventually(lambda: b.slice_jobs(), 30, "a Job on kube-b")
        (((a_index, a_epoch), a_job),) = on_a.items()
        (((b_index, _), _b_job),) = on_b.items()
        assert {a_index, b_index} == {0, 1}
        assert (
            a_job["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/train:1.4"
        )
        eventually(
            lambda: all(b.pod_running(j) for j in b.slice_jobs().values()), 20, "B's pod running"
        )
        # The agent renews A's lease: the Job's deadline moves past its first lease.
        eventually(
            lambda: a.slice_jobs()[(a_index, a_epoch)]["spec"]["activeDeadlineSeconds"] > 4,
            15,
            "A's Job deadline renewed",
        )

        a.kill()
        eventually(
            lambda: {x.name: x.state for x in c.clusters()}["kube-a"] == "Lost", 30, "kube-a Lost"
        )
        b.delete_pod("other", "someone-else")  # the other tenant's work ends
        moved = eventually(
            lambda: {k: j for k, j in b.slice_jobs().items() if k[0] == a_index and k[1] > a_epoch},
            30,
            "the lost slice's Job on kube-b",
        )
        (((_, new_epoch), _),) = moved.items()
        eventually(
            lambda: all(b.pod_running(j) for j in b.slice_jobs().values()),
            20,
            "both pods running on B",
        )
        # A running pod's log, through the hub and B's agent (each emulated pod prints a line).
        running = eventually(lambda: output(c, job.id, slice=a_index, epoch=new_epoch), 20,
                             "the running pod's log")
        assert running.startswith(b"emulated container of ") and b"on b-gpu-0" in running
        for j in b.slice_jobs().values():
            b.exit(j, 0)
        done = eventually(
            lambda: (lambda j: j if j.final else None)(c.job(job.id)), 30, "the job to end"
        )
        attempts = c.attempts(job.id)
    assert done.status.phase == "Succeeded", done.status.reason
    # Finished, its Jobs deleted: the copies the agent kept. A's epoch: A is gone, and says so.
    with fed.client() as c:
        text = eventually(lambda: (lambda t: t if t.count("emulated container") == 2 else None)(
            b"".join(c.logs(job.id)).decode()), 30, "both final attempts' output")
    assert f"==> slice {a_index} · epoch {a_epoch} · kube-a ·" in text
    assert "[orrery] cluster kube-a did not answer" in text
    assert text.index(f"epoch {a_epoch} · kube-a") < text.index(f"epoch {new_epoch} · kube-b")
    finals = {x.index: x for x in attempts if x.phase == "Succeeded"}
    assert finals[a_index].cluster == "kube-b"
    assert finals[a_index].epoch == new_epoch > a_epoch
    assert finals[b_index].cluster == "kube-b"
