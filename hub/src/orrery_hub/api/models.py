"""Typed bodies of the read routes that are not resources of their own: usage, audit and
the policies in force. Jobs, events, attempts and clusters are ``orrery.resources``.

Field names are the JSON's (camelCase on the wire, snake_case here).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class _Body(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class JobUsage(_Body):
    job: str
    team: str
    queue: str
    attempts: int
    gpu_seconds: float
    cost: float
    # GPU-seconds no Cost policy prices: "no price", which a cost of 0.00 would misstate.
    unpriced_gpu_seconds: float = 0.0


class TeamUsage(_Body):
    gpu_seconds: float
    cost: float
    unpriced_gpu_seconds: float = 0.0


class GpusInUse(_Body):
    by_team: dict[str, int]
    by_queue: dict[str, int]


class UsageReport(_Body):
    """``GET /v1/usage``: GPU-seconds and cost per job and team since ``since``."""

    since: float | None
    now: float
    jobs: list[JobUsage]
    teams: dict[str, TeamUsage]
    gpus_in_use: GpusInUse


class AuditEntry(_Body):
    """``GET /v1/audit``: one decision, with the policy set's digest at the time."""

    id: int | None
    at: float
    kind: str
    job: str | None
    decision: str
    detail: str
    policies: list[str]
    digest: str


class PolicySource(_Body):
    path: str
    sha256: str
    policies: list[str]


class PolicyEntryInfo(_Body):
    kind: str
    name: str
    file: str
    line: int
    sha256: str


class PolicyInfo(_Body):
    """``GET /v1/policies``: the set in force, file by file and policy by policy."""

    folder: str | None
    digest: str
    sources: list[PolicySource]
    entries: list[PolicyEntryInfo]


class PolicyReload(PolicyInfo):
    """``POST /v1/policies:reload``: the set now in force, and whether it changed."""

    changed: bool
