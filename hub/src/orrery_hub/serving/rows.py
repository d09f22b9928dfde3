"""The service table: a service's manifest and the replica jobs it owns.

A replica is an ordinary one-slice job (``orrery.service_manifest.replica_job``), so the
jobs tables hold its placement, attempts and epochs; this row only says which jobs are
the service's, and which spec template each runs (for rolling updates).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


class ServiceRow(SQLModel, table=True):
    __tablename__ = "services"

    name: str = Field(primary_key=True, max_length=63)
    team: str | None = Field(default=None, max_length=63, index=True)
    manifest: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    template: str = Field(max_length=64)  # the spec template hash replicas should run
    created_at: float
    # [{"index": 3, "job": "chat-r3-ab12", "template": "9f1c..."}]: replica jobs not yet final
    replicas: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    next_index: int = 0
    desired: int = 0
