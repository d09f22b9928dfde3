"""The helper a training script calls to tell Orrery how it is doing.

Stdlib only, so it costs a workload nothing to import::

    from orrery import workload

    ctx = workload.context()             # rank, world size, checkpoint dir, epoch ...
    start = 0
    if ctx.checkpoint:                   # the last complete checkpoint, from any earlier epoch
        start = load(ctx.checkpoint) + 1
    for step in range(start, total):
        ...
        workload.report(step=step, total_steps=total, metrics={"loss": loss})
        if step % 50 == 0:
            path = save(ctx.checkpoint_dir, step)      # write it completely first,
            workload.checkpoint(path, step=step)       # then record it

Reports go to the file named by ``ORRERY_PROGRESS_FILE`` (written atomically); the spoke
agent reads it into its next heartbeat. In a Kubernetes slice (``ORRERY_POD_NAME`` set by
the Job) they go to the pod's ``orrery.dev/progress`` annotation instead, patched with the
pod's service-account token at most every ``POD_INTERVAL_S`` (checkpoints and the last
step at once); the agent's pod watch brings it along. Outside Orrery the calls do nothing,
so the same script runs on a laptop. A report that cannot be delivered never stops the
workload: it is dropped, and the next one tries again.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

_state: dict[str, Any] = {}
POD_INTERVAL_S = 5.0  # one API write per pod per this long: progress is not worth more
ANNOTATION = "orrery.dev/progress"
_SA = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class Context:
    job: str | None
    job_name: str | None
    slice: int
    rank: int
    world_size: int
    epoch: int
    master_addr: str
    master_port: int
    checkpoint_dir: str | None
    checkpoint: str | None  # the last complete checkpoint the hub knows, if any


def context() -> Context:
    """Where this process stands, read from the environment Orrery set."""
    env = os.environ
    return Context(
        job=env.get("ORRERY_JOB"),
        job_name=env.get("ORRERY_JOB_NAME"),
        slice=int(env.get("ORRERY_SLICE", "0")),
        rank=int(env.get("RANK", "0")),
        world_size=int(env.get("WORLD_SIZE", "1")),
        epoch=int(env.get("ORRERY_EPOCH", "0")),
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=int(env.get("MASTER_PORT", "29500")),
        checkpoint_dir=env.get("ORRERY_CHECKPOINT_DIR"),
        checkpoint=env.get("ORRERY_CHECKPOINT") or None,
    )


def _report() -> dict[str, Any]:
    return {k: v for k, v in _state.items() if not k.startswith("_")}


def _annotate(pod: str) -> None:
    """Patch this pod's progress annotation through the API server (stdlib only)."""
    env = os.environ
    namespace = env.get("ORRERY_POD_NAMESPACE", "default")
    api = env.get("ORRERY_KUBE_API") or (
        f"https://{env.get('KUBERNETES_SERVICE_HOST', 'kubernetes.default.svc')}:"
        f"{env.get('KUBERNETES_SERVICE_PORT', '443')}"
    )
    body = json.dumps({"metadata": {"annotations": {ANNOTATION: json.dumps(_report())}}})
    req = urllib.request.Request(
        f"{api}/api/v1/namespaces/{namespace}/pods/{pod}", data=body.encode(), method="PATCH",
        headers={"Content-Type": "application/merge-patch+json"},
    )
    context = None
    token_file = env.get("ORRERY_KUBE_TOKEN_FILE", f"{_SA}/token")
    if os.path.exists(token_file):
        with open(token_file) as f:
            req.add_header("Authorization", f"Bearer {f.read().strip()}")
    if api.startswith("https"):
        ca = f"{_SA}/ca.crt"
        context = ssl.create_default_context(cafile=ca if os.path.exists(ca) else None)
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:
            resp.read()
    except Exception as exc:  # never let reporting stop the training
        if not _state.get("_warned"):
            _state["_warned"] = True
            print(f"orrery.workload: cannot report progress to the pod: {exc}", file=sys.stderr)


def _write(*, urgent: bool = False) -> None:
    pod = os.environ.get("ORRERY_POD_NAME")
    path = os.environ.get("ORRERY_PROGRESS_FILE")
    if pod and not path:
        now = time.monotonic()
        if urgent or now - _state.get("_pod_written", -POD_INTERVAL_S) >= POD_INTERVAL_S:
            _state["_pod_written"] = now
            _annotate(pod)
        return
    if not path:
        return
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".progress-")
    with os.fdopen(fd, "w") as f:
        json.dump(_report(), f)
    os.replace(tmp, path)  # atomic: the agent never reads half a report


def report(
    *,
    step: int | None = None,
    total_steps: int | None = None,
    metrics: dict[str, float] | None = None,
    message: str | None = None,
    min_interval_s: float = 0.2,
) -> None:
    """Record progress. Cheap to call every step: writes at most every ``min_interval_s``."""
    if step is not None:
        _state["step"] = step
    if total_steps is not None:
        _state["total_steps"] = total_steps
    if metrics:
        _state["metrics"] = {k: float(v) for k, v in metrics.items()}
    if message is not None:
        _state["message"] = message
    now = time.monotonic()
    final = total_steps is not None and step is not None and step + 1 >= total_steps
    if final or now - _state.get("_written", 0.0) >= min_interval_s:
        _state["_written"] = now
        _write(urgent=final)


def checkpoint(path: str, *, step: int | None = None) -> None:
    """Record ``path`` as the last complete checkpoint. Call after it is fully written."""
    _state["checkpoint"] = path
    if step is not None:
        _state["checkpoint_step"] = step
    _write(urgent=True)
