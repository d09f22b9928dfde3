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
agent reads it into its next heartbeat. In a Kubernetes slice they are POSTed instead to
the agent's endpoint named by ``ORRERY_PROGRESS_URL``, with the attempt's own token
(``ORRERY_PROGRESS_TOKEN``), at most every ``POD_INTERVAL_S`` (checkpoints and the last
step at once): the slice needs no Kubernetes API permission. Outside Orrery the calls do nothing,
so the same script runs on a laptop. A report that cannot be delivered never stops the
workload: it is dropped, and the next one tries again.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

_state: dict[str, Any] = {}
POD_INTERVAL_S = 5.0  # one report per slice per this long to the agent: progress is not worth more


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


# A serving replica's load travels as progress metrics under these names: the spoke
# carries them like any progress, the hub's autoscaler reads them (orrery.workload.load).
LOAD_METRICS = {
    "queue_depth": "load.queueDepth",
    "kv_cache": "load.kvCache",
    "tokens_per_s": "load.tokensPerS",
    "ttft_p95_s": "load.ttftP95",
}


def _report() -> dict[str, Any]:
    out = {k: v for k, v in _state.items() if not k.startswith("_")}
    if _state.get("_load"):
        out["metrics"] = {**out.get("metrics", {}), **_state["_load"]}
    return out


def _post(url: str) -> None:
    """Send the report to the spoke agent's progress endpoint with this attempt's token
    (stdlib only). The slice holds no API credentials: the agent checks the token."""
    req = urllib.request.Request(
        url,
        data=json.dumps(_report()).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {os.environ.get('ORRERY_PROGRESS_TOKEN', '')}",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()
    except Exception as exc:  # never let reporting stop the training
        if not _state.get("_warned"):
            _state["_warned"] = True
            print(f"orrery.workload: cannot report progress to the agent: {exc}", file=sys.stderr)


def _write(*, urgent: bool = False) -> None:
    url = os.environ.get("ORRERY_PROGRESS_URL")
    path = os.environ.get("ORRERY_PROGRESS_FILE")
    if url and not path:
        now = time.monotonic()
        if urgent or now - _state.get("_pod_written", -POD_INTERVAL_S) >= POD_INTERVAL_S:
            _state["_pod_written"] = now
            _post(url)
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
        # A diverged loss (nan, inf) is left out: the wire carries finite numbers only,
        # and one such value would otherwise cost the whole progress report.
        values = {k: float(v) for k, v in metrics.items()}
        _state["metrics"] = {k: v for k, v in values.items() if math.isfinite(v)}
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


def load(
    *,
    queue_depth: float | None = None,
    kv_cache: float | None = None,
    tokens_per_s: float | None = None,
    ttft_p95_s: float | None = None,
    min_interval_s: float = 0.5,
) -> None:
    """Report a serving replica's own load: requests waiting in its queue, the fraction of
    its KV cache in use (0-1), tokens generated per second, time to first token (95th
    percentile, s). The autoscaler scales on those a service's ``autoscale`` names
    (``queueDepth``, ``kvCacheUtilization``, ``ttftP95``). Cheap to call per request."""
    given = {
        "queue_depth": queue_depth,
        "kv_cache": kv_cache,
        "tokens_per_s": tokens_per_s,
        "ttft_p95_s": ttft_p95_s,
    }
    current = _state.setdefault("_load", {})
    for key, value in given.items():
        if value is not None and math.isfinite(float(value)):
            current[LOAD_METRICS[key]] = float(value)
    now = time.monotonic()
    if now - _state.get("_load_written", -min_interval_s) >= min_interval_s:
        _state["_load_written"] = now
        _write()
