"""An Assignment as the hub sends it, built from a job's and a slice's rows (and the
helpers it shares with admission: environment split, rendezvous port)."""

from __future__ import annotations

import logging
import zlib
from typing import Any

from orrery.wire import Assignment, SecretEnv
from orrery_hub.datasets.orders import DataOrder
from orrery_hub.store.models import JobRow, SliceRow

log = logging.getLogger("orrery.hub.reconcile")


def master_port(job_id: str, epoch: int) -> int:
    """A port for rank 0's rendezvous, fresh for each epoch."""
    return 20000 + zlib.crc32(f"{job_id}:{epoch}".encode()) % 30000


def split_env(env: dict[str, Any]) -> tuple[dict[str, str], dict[str, SecretEnv]]:
    """A manifest's env as stored: plain values, and secret references (sent as references;
    the spoke resolves them)."""
    plain: dict[str, str] = {}
    refs: dict[str, SecretEnv] = {}
    for k, v in env.items():
        if isinstance(v, dict):
            refs[k] = SecretEnv(name=v["secretRef"], key=v.get("key"))
        else:
            plain[k] = str(v)
    return plain, refs


def assignment_for(job: JobRow, sl: SliceRow, data: DataOrder | None = None) -> Assignment:
    """``data``: the datasets to stage and the slice's shard range (``datasets.orders``)."""
    spec = job.manifest["spec"]
    from orrery.duration import parse_duration

    runtime = spec.get("maxRuntime")
    plain, secrets = split_env(spec.get("env", {}))
    return Assignment(
        sender="hub",
        seq=0,
        job=job.id,
        job_name=job.name,
        index=sl.index,
        epoch=sl.epoch,
        world_size=int(spec.get("slices", 1)),
        node=sl.node or "",
        gpus=list(sl.gpus),
        master_addr=sl.master_addr or "127.0.0.1",
        master_port=sl.master_port or 29500,
        command=list(spec["command"]),
        image=spec.get("image"),
        env=plain | (data[1] if data else {}),
        secret_env=secrets or None,
        checkpoint_dir=job.checkpoint_dir,
        checkpoint=job.checkpoint,
        max_runtime_s=parse_duration(runtime) if runtime is not None else None,
        datasets=data[0] if data else None,
    )
