"""What the hub's REST API returns: the public shapes of jobs and clusters.

Shared by the hub (which builds them) and the client and CLI (which read them), so both
sides agree on one definition. Field names are camelCase on the wire, like the manifest.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

JOB_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Cancelled")
FINAL_JOB_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})


class _Out(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class SliceView(_Out):
    index: int
    phase: str
    epoch: int
    attempts: int
    cluster: str | None = None
    node: str | None = None
    gpus: list[int] = Field(default_factory=list)
    progress: dict[str, Any] | None = None


class Waiting(_Out):
    summary: str
    clusters: dict[str, str] = Field(default_factory=dict)


class DataStaging(_Out):
    """One dataset a job reads, on one cluster: staged, being staged (with its rate and
    time left), or failed."""

    dataset: str
    cluster: str
    state: str  # Staging, Ready, Failed
    size_bytes: int
    bytes_done: int = 0
    rate_bps: float = 0.0
    eta_s: float | None = None
    reason: str | None = None


class JobStatus(_Out):
    phase: str
    reason: str | None = None
    waiting: Waiting | None = None
    slices: list[SliceView] = Field(default_factory=list)
    restarts: int = 0
    checkpoint: str | None = None
    checkpoint_step: int | None = None
    checkpoint_dir: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    # Jobs that read datasets: where each stands on the job's clusters, and the options
    # placement weighed ("us-east: 2.0 TiB to stage, ~37m, $198 egress, GPUs free now; ...").
    data: list[DataStaging] = Field(default_factory=list)
    placement: str | None = None


class JobPublic(_Out):
    id: str
    metadata: dict[str, Any]
    spec: dict[str, Any]
    status: JobStatus

    @property
    def final(self) -> bool:
        return self.status.phase in FINAL_JOB_PHASES


class JobList(_Out):
    items: list[JobPublic]


class EventView(_Out):
    id: int | None = None  # the cursor: pass it as ``after`` for the next page
    at: float
    kind: str
    message: str
    index: int | None = None
    epoch: int | None = None
    cluster: str | None = None


class AttemptView(_Out):
    id: int | None = None  # the cursor: pass it as ``after`` for the next page
    index: int
    epoch: int
    cluster: str
    node: str
    gpus: list[int]
    phase: str
    assigned_at: float
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    reason: str | None = None


class GpuCount(_Out):
    total: int
    free: int


class ClusterPublic(_Out):
    name: str
    region: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    state: str
    executor: str = "local"
    nodes: int
    gpus: dict[str, GpuCount] = Field(default_factory=dict)
    last_heartbeat: float
    running_slices: int = 0


class ClusterList(_Out):
    items: list[ClusterPublic]


class CachedCopy(_Out):
    """A dataset in one cluster's cache, as its spoke reports it."""

    cluster: str
    version: str
    state: str
    size_bytes: int
    bytes_done: int = 0
    in_use: int = 0


class DatasetPublic(_Out):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    spec: dict[str, Any]
    size_bytes: int
    created_at: float
    cached: list[CachedCopy] = Field(default_factory=list)


class DatasetList(_Out):
    items: list[DatasetPublic]


class Problem(_Out):
    """An error body: what failed, and for 422 each field with its reason."""

    error: str
    detail: str
    retryable: bool = False
    fields: list[dict[str, str]] | None = None


class JobBatchItem(_Out):
    """One manifest of a batch: 201 and its job, or the status and problem it got."""

    status: int
    job: JobPublic | None = None
    error: Problem | None = None


class JobBatch(_Out):
    """``POST /v1/jobs:batch``: one item per manifest, in order."""

    items: list[JobBatchItem]
