"""Slices as ``batch/v1`` Jobs: the manifest, the markers, and how an attempt ended.

Pure functions over plain JSON dicts; ``kubernetes`` (the executor) does the IO.

One Job per attempt (job, slice, epoch): one pod, ``backoffLimit: 0`` and
``restartPolicy: Never``, because the hub owns retries. Labels find the Jobs again after
an agent restart; the ``orrery.dev/assignment`` annotation carries the whole assignment,
so a restarted agent can report and fence what it finds.

The spoke's lease is the Job's ``activeDeadlineSeconds``: see ``kubernetes`` for why.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from orrery.dataset import env_name
from orrery.wire import Assignment, SliceKey
from orrery_spoke_agent.executor.base import Outcome

Obj = Mapping[str, Any]

GROUP = "orrery.dev"
L_MANAGED = "app.kubernetes.io/managed-by"
L_CLUSTER = f"{GROUP}/cluster"
L_JOB = f"{GROUP}/job"
L_SLICE = f"{GROUP}/slice"
L_EPOCH = f"{GROUP}/epoch"
L_ATTEMPT = f"{GROUP}/attempt"  # the Job's name, on its pods too: how pods are matched
A_JOB = f"{GROUP}/job"
A_ASSIGNMENT = f"{GROUP}/assignment"
A_PROGRESS_TOKEN = f"{GROUP}/progress-token"  # on the Job: SHA-256 of the attempt's token
CONTAINER = "slice"

# Why a pod failed without its container exiting, when the node (not the workload) is to
# blame: eviction, node shutdown or loss, kubelet admission ("OutOfnvidia.com/gpu", ...).
NODE_REASONS = {"Evicted", "NodeLost", "Shutdown", "Terminated", "NodeShutdown",
                "UnexpectedAdmissionError", "NodeAffinity"}
# Waiting reasons that no amount of waiting fixes.
FATAL_WAITING = {"InvalidImageName", "ErrImageNeverPull"}
# Waiting reasons that may clear (a registry hiccup) but fail the slice past the timeout.
STUCK_WAITING = {"ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError",
                 "CreateContainerError", "RunContainerError"}


@dataclass(frozen=True)
class JobTemplate:
    """What the cluster's config adds to every slice's Job."""

    namespace: str
    cluster: str
    default_image: str | None = None
    tolerations: tuple[Mapping[str, Any], ...] = ()
    service_account: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    kill_grace_s: float = 2.0
    lease_s: float = 10.0


def _label_value(text: str) -> str:
    """A label value (63 chars of [A-Za-z0-9._-], alphanumeric at both ends)."""
    v = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63].strip("-_.")
    return v or "x"


K = tuple[str, int, int]  # (job, slice, epoch): how the executor keys an attempt


def key_of(key: SliceKey) -> K:
    return (key.job, key.index, key.epoch)


def job_name(key: SliceKey) -> str:
    """A DNS-1123 name, unique per attempt, short enough for the pods' generated names."""
    base = re.sub(r"[^a-z0-9-]", "-", key.job.lower()).strip("-")[:28].strip("-") or "job"
    digest = hashlib.sha256(f"{key.job}/{key.index}/{key.epoch}".encode()).hexdigest()[:6]
    return f"orrery-{base}-{key.index}-{key.epoch}-{digest}"


def selector(cluster: str) -> str:
    """The label selector for this spoke's Jobs and their pods."""
    return f"{L_MANAGED}=orrery,{L_CLUSTER}={_label_value(cluster)}"


def labels(cluster: str, key: SliceKey) -> dict[str, str]:
    return {L_MANAGED: "orrery", L_CLUSTER: _label_value(cluster), L_JOB: _label_value(key.job),
            L_SLICE: str(key.index), L_EPOCH: str(key.epoch), L_ATTEMPT: job_name(key)}


def deadline_s(elapsed_s: float, lease_s: float, max_runtime_s: float | None) -> int:
    """``activeDeadlineSeconds`` that lets the Job run one more lease (never past maxRuntime)."""
    d = math.ceil(max(0.0, elapsed_s) + lease_s)
    if max_runtime_s is not None:
        d = min(d, math.ceil(max_runtime_s))
    return max(1, d)


def _data(a: Assignment, env: dict[str, str]) -> tuple[list[Any], list[Any]]:
    """Each staged dataset as a read-only hostPath volume at its ``mountPath``, and its
    variable pointing there. The agent's cache folder must be the same path on the GPU
    nodes (the agent as a DaemonSet on a hostPath, or a shared filesystem mounted alike)."""
    volumes: list[Any] = []
    mounts: list[Any] = []
    for i, m in enumerate(a.datasets or ()):
        var = env_name(m.name)
        staged = env.get(var)
        if staged is None:
            continue
        volumes.append(
            {"name": f"orrery-data-{i}", "hostPath": {"path": staged, "type": "Directory"}}
        )
        mounts.append({"name": f"orrery-data-{i}", "mountPath": m.mount_path, "readOnly": True})
        env[var] = m.mount_path
    return volumes, mounts


def manifest(a: Assignment, env: Mapping[str, str], t: JobTemplate, *, resource: str | None,
             product: str | None, progress: tuple[str, str] | None = None) -> dict[str, Any]:
    """The Job for one attempt. ``resource``/``product``: the GPU resource and product label
    of the node the hub chose (None: unknown; a CPU-only slice needs neither).
    ``progress``: (the agent's progress URL, this attempt's token), see ``progress``."""
    image = a.image or t.default_image
    assert image is not None, "checked by the caller"
    lab = labels(t.cluster, a.key)
    annotations = {A_JOB: a.job, A_ASSIGNMENT: a.model_dump_json()}
    full = dict(env)
    data_volumes, data_mounts = _data(a, full)
    if progress is not None:
        url, token = progress
        full["ORRERY_PROGRESS_URL"] = f"{url.rstrip('/')}/v1/progress/{job_name(a.key)}"
        full["ORRERY_PROGRESS_TOKEN"] = token
        annotations[A_PROGRESS_TOKEN] = hashlib.sha256(token.encode()).hexdigest()
    container: dict[str, Any] = {
        "name": CONTAINER, "image": image, "command": list(a.command),
        "env": [{"name": k, "value": v} for k, v in sorted(full.items())] + [
            # Secrets by reference: the kubelet resolves them; the Job holds names only.
            {"name": k, "valueFrom": {"secretKeyRef": {"name": r.name, "key": r.key or k}}}
            for k, r in sorted((a.secret_env or {}).items())
        ],
    }
    if a.gpus:
        count = str(len(a.gpus))
        res = resource or "nvidia.com/gpu"
        container["resources"] = {"limits": {res: count}, "requests": {res: count}}
    if t.volume_mounts or data_mounts:
        container["volumeMounts"] = [dict(m) for m in t.volume_mounts] + data_mounts
    node_selector = {"nvidia.com/gpu.product": product} if (product and a.gpus) else {}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": max(1, math.ceil(t.kill_grace_s)),
        "containers": [container],
        # The node the hub chose, by its name (what DaemonSets use): labels can be absent.
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [a.node]}]}]}}},
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if t.tolerations:
        pod_spec["tolerations"] = [dict(x) for x in t.tolerations]
    if t.service_account:
        pod_spec["serviceAccountName"] = t.service_account
    else:
        # A slice needs no API credentials (progress goes to the agent, see progress.py):
        # none are mounted, so a workload cannot relabel its pod out of its Job.
        pod_spec["automountServiceAccountToken"] = False
    if t.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in t.image_pull_secrets]
    if t.volumes or data_volumes:
        pod_spec["volumes"] = [dict(v) for v in t.volumes] + data_volumes
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name(a.key), "namespace": t.namespace, "labels": lab,
                     "annotations": annotations},
        "spec": {
            "backoffLimit": 0,  # Orrery owns retries
            "activeDeadlineSeconds": deadline_s(0, t.lease_s, a.max_runtime_s),
            "template": {"metadata": {"labels": lab, "annotations": {A_JOB: a.job}},
                         "spec": pod_spec},
        },
    }


def escaped(pod: Obj, owner: str, cluster: str) -> bool:
    """A pod named for Job ``owner`` (pod names are immutable: ``<Job name>-<5 chars>``)
    that no longer carries its labels or its Job as controller: it left its Job, so the
    Job's deadline (the lease) no longer bounds it."""
    md = pod.get("metadata") or {}
    want = {L_MANAGED: "orrery", L_CLUSTER: _label_value(cluster), L_ATTEMPT: owner}
    have = md.get("labels") or {}
    owned = any(r.get("kind") == "Job" and r.get("name") == owner and r.get("controller")
                for r in md.get("ownerReferences") or [])
    return not owned or any(have.get(k) != v for k, v in want.items())


def owner_by_name(pod_name: str, names: Mapping[str, Any]) -> str | None:
    """The Job a pod was created for, from its generated name."""
    base, sep, tail = pod_name.rpartition("-")
    return base if sep and len(tail) == 5 and base in names else None


def assignment_of(job: Obj) -> Assignment | None:
    raw = ((job.get("metadata") or {}).get("annotations") or {}).get(A_ASSIGNMENT)
    if not raw:
        return None
    try:
        return Assignment.model_validate_json(raw)
    except ValidationError:
        return None


def timestamp(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _condition(obj: Obj, kind: str) -> Obj | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return dict(c)
    return None


def _terminated(pod: Obj) -> Obj | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            state = cs.get("state") or {}
            return state.get("terminated")
    return None


def _waiting(pod: Obj) -> Obj | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return dict(waiting)
    return None


def pending_problem(pod: Obj | None) -> tuple[str, bool] | None:
    """Why a pod is not running yet: (reason, fatal now). None: nothing wrong known."""
    if pod is None:
        return None
    waiting = _waiting(pod)
    if waiting and waiting.get("reason") in FATAL_WAITING | STUCK_WAITING:
        reason = waiting.get("reason")
        text = f"image: {reason}: {waiting.get('message', '')}".strip(": ")
        return text, reason in FATAL_WAITING
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return f"unschedulable: {c.get('message') or c.get('reason', '')}", False
    return None


def judge(job: Obj | None, pods: Sequence[Obj], *, now: float, launched_at: float,
          pending_timeout_s: float, stop_reason: str | None,
          max_runtime_s: float | None) -> Outcome | None:
    """How the attempt ended, or None while it runs (or may still start).

    ``stop_reason``: this spoke ordered it stopped (a kill, a cancel, a lapsed lease);
    ``launched_at``: when the Job was created, for the pending timeout.
    """
    pod = max(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "",
              default=None)
    phase = (pod.get("status") or {}).get("phase") if pod is not None else None
    term = _terminated(pod) if pod is not None else None
    finished = (timestamp(term.get("finishedAt")) if term else None) or now
    if phase == "Succeeded" or (job is not None and _condition(job, "Complete")):
        return Outcome(exit_code=0, reason=None, finished_at=finished)
    failed = _condition(job, "Failed") if job is not None else None
    if failed is not None and failed.get("reason") == "DeadlineExceeded":
        started = timestamp((job or {}).get("status", {}).get("startTime")) or launched_at
        if max_runtime_s is not None and now - started >= max_runtime_s - 1:
            return Outcome(exit_code=None, reason=f"maxRuntime exceeded ({max_runtime_s}s)",
                           finished_at=finished)
        return Outcome(exit_code=None, killed=True, finished_at=finished,
                       reason=stop_reason or "lease lapsed: the Job's deadline (the spoke's "
                                             "lease) ran out with no word from the hub")
    if phase == "Failed" or failed is not None:
        code = int(term["exitCode"]) if term and term.get("exitCode") is not None else None
        why = (term or {}).get("reason") or (pod or {}).get("status", {}).get("reason") \
            or (failed or {}).get("reason")
        if stop_reason is not None:
            return Outcome(exit_code=code, reason=stop_reason, finished_at=finished, killed=True)
        pod_status = (pod or {}).get("status") or {}
        pod_reason = str(pod_status.get("reason") or "")
        if code is None and (pod_reason in NODE_REASONS or pod_reason.startswith("OutOf")):
            # The node, not the workload: the hub must not count it against the job.
            return Outcome(exit_code=None, finished_at=finished,
                           reason=f"node lost: pod {pod_reason}: "
                                  f"{pod_status.get('message', '')}".strip(": "))
        return Outcome(exit_code=code,
                       reason=f"{why}: {(failed or {}).get('message', '')}".strip(": ")
                       if why else None, finished_at=finished)
    if job is None:  # deleted: by this spoke (a kill) or by someone else
        if stop_reason is not None:
            code = int(term["exitCode"]) if term and term.get("exitCode") is not None else None
            return Outcome(exit_code=code, reason=stop_reason, finished_at=now, killed=True)
        return Outcome(exit_code=None, reason="vanished: its Job was deleted", finished_at=now)
    if phase in (None, "Pending"):
        problem = pending_problem(pod)
        if problem is not None and (problem[1] or now - launched_at > pending_timeout_s):
            return Outcome(exit_code=None, reason=problem[0], finished_at=now)
        if problem is None and now - launched_at > pending_timeout_s:
            return Outcome(exit_code=None, finished_at=now,
                           reason=f"pending: no pod running after {pending_timeout_s:.0f}s")
    return None

