"""The leader row. One row (``id`` 1), made at the first claim and never deleted."""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class LeaderRow(SQLModel, table=True):
    __tablename__ = "hub_leader"

    id: int = Field(default=1, primary_key=True)
    # Bumped at every change of leader; a write transaction commits only if the row still
    # holds its hub's epoch.
    epoch: int = 0
    holder: str = Field(default="", max_length=64)  # the leading hub's id (per process)
    address: str = Field(default="", max_length=255)  # its API URL, for redirects
    expires_at: float = 0.0  # database time (seconds since the epoch)
