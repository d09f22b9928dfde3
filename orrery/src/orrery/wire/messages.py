"""Messages between hub and spokes. Reports are complete (level-triggered); orders are
idempotent (an assignment names its epoch, a kill names the epoch it kills).

Every message has the envelope fields ``v`` (protocol version), ``kind``, ``sender``,
``seq`` and ``sig`` (reserved for signing), so signing can be added without changing a
message. Field limits are declared here so a hostile or broken peer cannot make the
receiver allocate without bound.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

PROTOCOL_VERSION = 1
MAX_NODES = 10_000
MAX_SLICES_PER_REPORT = 10_000
MAX_GPUS_PER_NODE = 64
MAX_METRICS = 64

Name = Annotated[str, Field(min_length=1, max_length=253)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Envelope(_Wire):
    v: Literal[1] = 1  # PROTOCOL_VERSION
    sender: Name
    seq: int = Field(ge=0)
    sig: str | None = None  # reserved: a signature over the rest, once enrollment lands


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
    index: int = Field(ge=0)
    epoch: int = Field(ge=0)


class Progress(_Wire):
    """What the workload helper last reported."""

    step: int | None = Field(default=None, ge=0)
    total_steps: int | None = Field(default=None, ge=0)
    metrics: dict[str, float] = Field(default_factory=dict, max_length=MAX_METRICS)
    checkpoint: str | None = Field(default=None, max_length=4096)
    checkpoint_step: int | None = Field(default=None, ge=0)
    message: str | None = Field(default=None, max_length=1024)


class NodeReport(_Wire):
    name: Name
    gpu_type: str | None = Field(default=None, max_length=128)  # None: a CPU-only node
    gpu_memory_mib: int = Field(default=0, ge=0)
    gpus: int = Field(ge=0, le=MAX_GPUS_PER_NODE)
    free: list[int] = Field(default_factory=list, max_length=MAX_GPUS_PER_NODE)
    ready: bool = True


class SliceReport(_Wire):
    job: Name
    index: int = Field(ge=0)
    epoch: int = Field(ge=0)
    phase: SlicePhase
    node: str | None = None
    gpus: list[int] = Field(default_factory=list, max_length=MAX_GPUS_PER_NODE)
    exit_code: int | None = None
    reason: str | None = Field(default=None, max_length=2048)
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress | None = None
    # Why a Failed or Killed slice ended, where the spoke knows: "workload" (its own exit,
    # or a launch that can never work: no such file, exec format error) counts against
    # maxRetries; "platform" (a kill, a lapsed lease, a lost node) does not. None: a spoke
    # one version behind, or not known; the hub then falls back to the reason's prefix.
    cause: Literal["workload", "platform"] | None = None

    @property
    def key(self) -> SliceKey:
        return SliceKey(job=self.job, index=self.index, epoch=self.epoch)


class Heartbeat(_Envelope):
    """The spoke's full report: its capacity and every slice it knows, with epochs."""

    kind: Literal["heartbeat"] = "heartbeat"
    cluster: Name
    incarnation: str = Field(min_length=1, max_length=64)  # new on each agent start
    address: str = Field(default="127.0.0.1", max_length=253)  # where its slices listen
    labels: dict[str, str] = Field(default_factory=dict)
    executor: str = Field(default="local", max_length=32)
    lease_s: float = Field(gt=0)
    nodes: list[NodeReport] = Field(default_factory=list, max_length=MAX_NODES)
    slices: list[SliceReport] = Field(default_factory=list, max_length=MAX_SLICES_PER_REPORT)


class HeartbeatAck(_Envelope):
    """The hub's reply to a heartbeat. Receiving one renews the spoke's lease."""

    kind: Literal["heartbeat_ack"] = "heartbeat_ack"
    accepted: bool = True
    reason: str | None = None
    # Terminal slices the hub has recorded: the spoke may stop reporting them.
    forget: list[SliceKey] = Field(default_factory=list)


class SliceStatus(_Envelope):
    """A slice changed phase or progressed. A hint: the next heartbeat carries the truth."""

    kind: Literal["slice_status"] = "slice_status"
    cluster: Name
    incarnation: str = Field(min_length=1, max_length=64)
    slice: SliceReport


class _Order(_Envelope):
    # Hub clock + a short TTL, signed with the rest (orrery.wire.signing). Optional so an
    # N-1 hub's orders still decode, but a spoke that pinned the hub's key refuses an
    # order without it.
    expires_at: float | None = Field(default=None, allow_inf_nan=False)


class SecretEnv(_Wire):
    """A variable whose value the spoke resolves from a secret it holds (never the value)."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    key: str | None = Field(default=None, pattern=r"^[-._a-zA-Z0-9]{1,253}$")


class Assignment(_Order):
    """Run slice ``index`` of ``job`` at ``epoch`` on ``node`` with GPUs ``gpus``."""

    kind: Literal["assignment"] = "assignment"
    job: Name
    job_name: Name
    index: int = Field(ge=0)
    epoch: int = Field(ge=0)
    world_size: int = Field(ge=1)
    node: Name
    gpus: list[int] = Field(default_factory=list, max_length=MAX_GPUS_PER_NODE)
    master_addr: str
    master_port: int = Field(ge=1, le=65535)
    command: list[str] = Field(min_length=1)
    image: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    # Variable -> the secret the spoke resolves it from. None (not sent) when there are
    # none, so an order without secrets encodes as it did before the field existed.
    secret_env: dict[str, SecretEnv] | None = Field(default=None, max_length=256)
    checkpoint_dir: str
    checkpoint: str | None = None  # the last complete checkpoint to resume from
    max_runtime_s: float | None = Field(default=None, gt=0)

    @property
    def key(self) -> SliceKey:
        return SliceKey(job=self.job, index=self.index, epoch=self.epoch)


class Kill(_Order):
    """Stop slice ``index`` of ``job`` if it runs at ``epoch`` or older."""

    kind: Literal["kill"] = "kill"
    job: Name
    index: int = Field(ge=0)
    epoch: int = Field(ge=0)
    reason: str = Field(default="", max_length=1024)
    grace_s: float = Field(default=5.0, ge=0, le=3600)


Order = Annotated[Assignment | Kill, Field(discriminator="kind")]
