"""Messages between hub and spokes. Reports are complete (level-triggered); orders are
idempotent (an assignment names its epoch, a kill names the epoch it kills).

Every message has the envelope fields ``v`` (protocol version), ``kind``, ``sender``,
``seq`` and ``sig`` (reserved for signing), so signing can be added without changing a
message. Field limits are declared here so a hostile or broken peer cannot make the
receiver allocate without bound: every string, list and map has a size limit, every
integer fits a signed 64-bit column (an epoch of 2**70 is refused here, at decode, and
never reaches the database), and every float is finite (``nan`` slips past every
comparison). A message past a limit is a WireError: counted, logged and dropped.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator

PROTOCOL_VERSION = 1
MAX_NODES = 10_000
MAX_SLICES_PER_REPORT = 10_000
MAX_GPUS_PER_NODE = 64
MAX_METRICS = 64
MAX_LABELS = 64
MAX_ENV = 256
MAX_COMMAND_ARGS = 1024
MAX_REASON = 2048
MAX_PATH = 4096
MAX_DATASETS = 10_000
INT64_MAX = 2**63 - 1

Name = Annotated[str, Field(min_length=1, max_length=253)]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]  # epochs, indices, steps, seq: an INTEGER
GpuIndex = Annotated[int, Field(ge=0, le=4095)]
Label = Annotated[str, Field(max_length=253)]
PathText = Annotated[str, Field(max_length=MAX_PATH)]
Reason = Annotated[str, Field(max_length=MAX_REASON)]


def clip(text: str, limit: int = MAX_REASON) -> str:
    """``text`` cut to ``limit`` characters, marked as cut: for reasons built from values a
    peer chose (a 2,100-digit epoch must not make our own message unsendable)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Envelope(_Wire):
    v: Literal[1] = 1  # PROTOCOL_VERSION
    sender: Name
    seq: Count
    sig: str | None = Field(default=None, max_length=1024)  # a signature over the rest


class SlicePhase(StrEnum):
    STARTING = "Starting"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    KILLED = "Killed"  # stopped on an order, a cancel, or a lapsed lease

    @property
    def terminal(self) -> bool:
        return self in (SlicePhase.SUCCEEDED, SlicePhase.FAILED, SlicePhase.KILLED)


class SliceKey(_Wire):
    job: Name
    index: Count
    epoch: Count


class Progress(_Wire):
    """What the workload helper last reported."""

    step: Count | None = None
    total_steps: Count | None = None
    metrics: dict[Annotated[str, Field(max_length=128)], float] = Field(
        default_factory=dict, max_length=MAX_METRICS
    )
    checkpoint: PathText | None = None
    checkpoint_step: Count | None = None
    message: str | None = Field(default=None, max_length=1024)


class NodeReport(_Wire):
    name: Name
    gpu_type: str | None = Field(default=None, max_length=128)  # None: a CPU-only node
    gpu_memory_mib: int = Field(default=0, ge=0, le=INT64_MAX)
    gpus: int = Field(ge=0, le=MAX_GPUS_PER_NODE)
    free: list[GpuIndex] = Field(default_factory=list, max_length=MAX_GPUS_PER_NODE)
    ready: bool = True


class SliceReport(_Wire):
    job: Name
    index: Count
    epoch: Count
    phase: SlicePhase
    node: str | None = Field(default=None, max_length=253)
    gpus: list[GpuIndex] = Field(default_factory=list, max_length=MAX_GPUS_PER_NODE)
    exit_code: int | None = Field(default=None, ge=-INT64_MAX - 1, le=INT64_MAX)
    reason: Reason | None = None
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress | None = None
    # Why a Failed or Killed slice ended, where the spoke knows: "workload" (its own exit,
    # or a launch that can never work: no such file, exec format error) counts against
    # maxRetries; "platform" (a kill, a lapsed lease, a lost node) does not. None: a spoke
    # one version behind, or not known; the hub then falls back to the reason's prefix.
    cause: Literal["workload", "platform"] | None = None
    # host:port a serving replica listens on (the spoke chose the port, passed as $PORT).
    # None: not a serving replica; left out on the wire then, so N-1 hubs decode it.
    endpoint: str | None = Field(default=None, max_length=300)

    @property
    def key(self) -> SliceKey:
        return SliceKey(job=self.job, index=self.index, epoch=self.epoch)


class DatasetState(StrEnum):
    STAGING = "Staging"
    READY = "Ready"
    FAILED = "Failed"


class CachedDataset(_Wire):
    """One dataset version in the cluster's cache, or being copied into it."""

    name: Name
    version: Label
    state: DatasetState
    size_bytes: Count
    bytes_done: Count = 0
    rate_bps: float = Field(default=0.0, ge=0)  # bytes per second over the last interval
    eta_s: float | None = Field(default=None, ge=0)
    in_use: Count = 0  # slices reading it now: never evicted while above 0
    last_used: float | None = None
    reason: Reason | None = None  # why it Failed


class Heartbeat(_Envelope):
    """The spoke's full report: its capacity and every slice it knows, with epochs."""

    kind: Literal["heartbeat"] = "heartbeat"
    cluster: Name
    incarnation: str = Field(min_length=1, max_length=64)  # new on each agent start
    address: str = Field(default="127.0.0.1", max_length=253)  # where its slices listen
    labels: dict[Label, Label] = Field(default_factory=dict, max_length=MAX_LABELS)
    executor: str = Field(default="local", max_length=32)
    lease_s: float = Field(gt=0, le=86400)
    nodes: list[NodeReport] = Field(default_factory=list, max_length=MAX_NODES)
    slices: list[SliceReport] = Field(default_factory=list, max_length=MAX_SLICES_PER_REPORT)
    # What the cluster's dataset cache holds. None (not sent): a spoke one version behind,
    # or one without a cache; so a heartbeat without it decodes as it always did.
    datasets: list[CachedDataset] | None = Field(default=None, max_length=MAX_DATASETS)


class HeartbeatAck(_Envelope):
    """The hub's reply to a heartbeat. Receiving one renews the spoke's lease."""

    kind: Literal["heartbeat_ack"] = "heartbeat_ack"
    accepted: bool = True
    reason: Reason | None = None
    # Terminal slices the hub has recorded: the spoke may stop reporting them.
    forget: list[SliceKey] = Field(default_factory=list, max_length=MAX_SLICES_PER_REPORT)


class SliceStatus(_Envelope):
    """A slice changed phase or progressed. A hint: the next heartbeat carries the truth."""

    kind: Literal["slice_status"] = "slice_status"
    cluster: Name
    incarnation: str = Field(min_length=1, max_length=64)
    slice: SliceReport


class _Order(_Envelope):
    """An order's expiry travels inside ``sig`` (``"<expires_at>:<base64 signature>"``), not
    as a field of its own: ``sig`` was reserved from the first version, so a spoke one
    version behind (which forbids unknown fields) still decodes a signed order. In Python
    the expiry is the field ``expires_at``; on the wire it is folded into ``sig``."""

    # Hub clock + a short TTL, signed with the rest (orrery.wire.signing). Optional so an
    # N-1 hub's orders still decode, but a spoke that pinned the hub's key refuses an
    # order without it.
    expires_at: float | None = Field(default=None, allow_inf_nan=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _unfold_expiry(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "expires_at" in data:
            return data  # constructed in Python (or a stray wire field: forbidden below)
        sig = data.get("sig")
        if isinstance(sig, str) and ":" in sig:
            when, _, raw = sig.partition(":")
            try:
                expires = float(when)
            except ValueError:
                raise ValueError("sig: the expiry before ':' is not a number") from None
            if not math.isfinite(expires):
                raise ValueError("sig: the expiry must be a finite number")
            return {**data, "sig": raw, "expires_at": expires}
        return data

    @field_serializer("sig")
    def _fold_expiry(self, sig: str | None) -> str | None:
        if sig is None or self.expires_at is None:
            return sig
        return f"{self.expires_at!r}:{sig}"


class SecretEnv(_Wire):
    """A variable whose value the spoke resolves from a secret it holds (never the value)."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    key: str | None = Field(default=None, pattern=r"^[-._a-zA-Z0-9]{1,253}$")


class DataMount(_Wire):
    """A dataset the slice reads: where to copy it from, and where the slice expects it."""

    name: Name
    version: Label
    uri: PathText  # s3://bucket/prefix
    endpoint: str | None = Field(default=None, max_length=1024)
    region: Label | None = None  # the object store's region (S3 signs with it)
    size_bytes: Count
    mount_path: PathText


class Assignment(_Order):
    """Run slice ``index`` of ``job`` at ``epoch`` on ``node`` with GPUs ``gpus``."""

    kind: Literal["assignment"] = "assignment"
    job: Name
    job_name: Name
    index: Count
    epoch: Count
    world_size: int = Field(ge=1, le=1_000_000)
    node: Name
    gpus: list[GpuIndex] = Field(default_factory=list, max_length=MAX_GPUS_PER_NODE)
    master_addr: str = Field(max_length=253)
    master_port: int = Field(ge=1, le=65535)
    # Arguments and environment values are bounded as a whole by the message size (the
    # hub checks an Assignment's encoded size at admission: see codec.MAX_ORDER_BYTES).
    command: list[str] = Field(min_length=1, max_length=MAX_COMMAND_ARGS)
    image: str | None = Field(default=None, max_length=1024)
    env: dict[str, str] = Field(default_factory=dict, max_length=MAX_ENV)
    # Variable -> the secret the spoke resolves it from. None (not sent) when there are
    # none, so an order without secrets encodes as it did before the field existed.
    secret_env: dict[str, SecretEnv] | None = Field(default=None, max_length=256)
    checkpoint_dir: PathText
    checkpoint: PathText | None = None  # the last complete checkpoint to resume from
    max_runtime_s: float | None = Field(default=None, gt=0)
    # Datasets to stage into the cluster's cache before the slice starts. None (not sent)
    # when there are none, so an order without data encodes as it did before.
    datasets: list[DataMount] | None = Field(default=None, max_length=16)

    @property
    def key(self) -> SliceKey:
        return SliceKey(job=self.job, index=self.index, epoch=self.epoch)


class Kill(_Order):
    """Stop slice ``index`` of ``job`` if it runs at ``epoch`` or older."""

    kind: Literal["kill"] = "kill"
    job: Name
    index: Count
    epoch: Count
    reason: str = Field(default="", max_length=1024)
    grace_s: float = Field(default=5.0, ge=0, le=3600)


class Prefetch(_Order):
    """Start staging these datasets now: the hub has chosen this cluster for ``job``, which
    still waits for its GPUs here. A hint: the assignment carries them again. A spoke one
    version behind drops it as an unknown kind (counted), and stages at assignment."""

    kind: Literal["prefetch"] = "prefetch"
    job: Name
    datasets: list[DataMount] = Field(min_length=1, max_length=16)


AnyOrder = Assignment | Kill | Prefetch
Order = Annotated[Assignment | Kill | Prefetch, Field(discriminator="kind")]
