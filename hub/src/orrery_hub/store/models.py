"""Tables. A job has slices; each slice has attempts (one per epoch it ran at).

Phases the hub keeps for a slice:

    Pending   waits for placement (``not_before`` holds a retry backoff)
    Assigned  placed at ``epoch`` on ``cluster``/``node``; the spoke has not confirmed yet
    Running   the spoke reports it running at ``epoch``
    Succeeded / Failed / Cancelled   final

An attempt is open (``ended_at`` is None) until its spoke reports it stopped, or its
cluster is declared Lost (by then the spoke's lease has stopped it), or its fate has been
unknown for a lease + kill grace + clock drift (``fate_unknown_until``). A slice is placed
again only when its previous attempt is closed: that, with epochs, is what keeps one slice
from ever running twice at once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel


class JobRow(SQLModel, table=True):
    __tablename__ = "jobs"

    seq: int | None = Field(default=None, primary_key=True)  # submission order
    id: str = Field(index=True, unique=True, max_length=64)
    name: str = Field(max_length=63)
    queue: str = Field(max_length=63, index=True)
    team: str | None = Field(default=None, max_length=63, index=True)
    priority: int = 0
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    manifest: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    phase: str = Field(default="Pending", max_length=16, index=True)
    reason: str | None = None
    waiting: dict[str, str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    restarts: int = 0  # gang restarts used against maxRetries
    checkpoint_dir: str
    checkpoint: str | None = None
    checkpoint_step: int | None = None
    checkpoint_at: float | None = None  # hub time the last checkpoint was reported
    version: int = 0  # bumped on every change; the applier checks it


class SliceRow(SQLModel, table=True):
    __tablename__ = "slices"

    job_id: str = Field(primary_key=True, max_length=64)
    index: int = Field(primary_key=True)
    phase: str = Field(default="Pending", max_length=16, index=True)
    epoch: int = 1
    cluster: str | None = Field(default=None, index=True, max_length=63)
    node: str | None = None
    gpus: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    master_addr: str | None = None
    master_port: int | None = None
    attempts: int = 0  # attempts started
    failures: int = 0  # failed attempts (non-zero exits), against maxRetries
    not_before: float = 0.0  # retry backoff: not placed before this hub time
    progress: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Which spoke message confirmed it running: "incarnation:seq". A later heartbeat from the
    # same incarnation that lacks it, or one from a new incarnation, means it vanished.
    confirmed_by: str | None = None
    updated_at: float = 0.0


class AttemptRow(SQLModel, table=True):
    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_slice", "job_id", "index", "epoch"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=64)
    index: int
    epoch: int
    cluster: str = Field(max_length=63)
    node: str
    gpus: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    gpu_type: str | None = Field(default=None, max_length=128)  # for accounting and prices
    # Assigned Running Succeeded Failed Killed Lost
    phase: str = Field(default="Assigned", max_length=16)
    assigned_at: float
    started_at: float | None = None  # spoke clock: when the process started
    ended_at: float | None = None  # spoke clock where known, else hub clock at detection
    exit_code: int | None = None
    reason: str | None = None
    preempted_for: str | None = Field(default=None, max_length=64)  # stopping to make room
    stop_grace_s: float | None = None  # the preemption kill's grace, for resending it
    cause: str | None = Field(default=None, max_length=16)  # workload | platform, if known
    # Which spoke incarnation last reported it not ended: a later claim about it from
    # another incarnation (that never ran it) is no proof of its end.
    seen_by: str | None = Field(default=None, max_length=64)
    # Its fate is unknown (it vanished from its spoke's report, its supervisor died, or its
    # assignment was never confirmed): it stays open, holding its GPUs and blocking the next
    # epoch, until this hub time — lease + kill grace + clock drift after the hub noticed —
    # unless a report settles it first. Then it is closed as Lost.
    fate_unknown_until: float | None = None


class ClusterRow(SQLModel, table=True):
    __tablename__ = "clusters"

    name: str = Field(primary_key=True, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = Field(default="Ready", max_length=16)
    address: str = "127.0.0.1"
    executor: str = "local"
    incarnation: str | None = None
    nodes: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    first_seen: float
    last_heartbeat: float


class EventRow(SQLModel, table=True):
    __tablename__ = "events"

    id: int | None = Field(default=None, primary_key=True)
    at: float
    job_id: str | None = Field(default=None, index=True, max_length=64)
    index: int | None = None
    epoch: int | None = None
    cluster: str | None = None
    kind: str = Field(max_length=32)
    message: str


class AuditRow(SQLModel, table=True):
    """Every admit, deny, hold, placement and policy reload, with the policies in force."""

    __tablename__ = "audit"

    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)
    kind: str = Field(max_length=32)  # admit deny hold place reload
    job_id: str | None = Field(default=None, index=True, max_length=64)
    decision: str = Field(max_length=32)
    detail: str
    policies: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    digest: str = Field(max_length=128)


class DatasetRow(SQLModel, table=True):
    """A ``kind: Dataset`` as applied: its manifest, and the size placement weighs."""

    __tablename__ = "datasets"

    name: str = Field(primary_key=True, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    manifest: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    size_bytes: int
    version: str = Field(max_length=63)
    created_at: float
    updated_at: float
