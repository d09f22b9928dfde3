"""Tables of identity: clusters' one-time join tokens (hashed) and enrollments, and the
inference gateways' enrollments."""

from __future__ import annotations

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


class JoinTokenRow(SQLModel, table=True):
    """A join token for one cluster name. Only its SHA-256 is kept; it is spent on first use."""

    __tablename__ = "join_tokens"

    id: str = Field(primary_key=True, max_length=32)
    cluster: str = Field(index=True, max_length=63)
    digest: str = Field(max_length=64)
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: float
    expires_at: float
    used_at: float | None = None


class EnrollmentRow(SQLModel, table=True):
    """A cluster's identity: the labels the admin bound, its certificate's subject and state.

    ``state``: Pending (waits for ``orrery cluster approve``), Approved, Revoked. A revoked
    name can enroll again with a new token; it gets a new enrollment id, so certificates of
    the old one map to no NATS user."""

    __tablename__ = "enrollments"

    cluster: str = Field(primary_key=True, max_length=63)
    enrollment: str = Field(max_length=32)
    state: str = Field(default="Approved", max_length=16)
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    subject: str = Field(max_length=255)
    serial: str = Field(max_length=64)
    not_after: float
    enrolled_at: float
    changed_at: float


class GatewayRow(SQLModel, table=True):
    """An inference gateway's NATS identity (``POST /v1/gateways:enroll``): the subject of its
    current certificate. Enrolling again gives a new enrollment id, so the certificates of
    the last one map to no NATS user; deleting the row (``orrery_hub`` revoke) removes its
    user, and nats-server drops its connection at the reload."""

    __tablename__ = "gateways"

    gateway: str = Field(primary_key=True, max_length=63)
    enrollment: str = Field(max_length=32)
    subject: str = Field(max_length=255)
    serial: str = Field(max_length=64)
    not_after: float
    enrolled_at: float
