"""The REST shapes of API tokens (``/v1/tokens``), shared by the hub and the client.

A token's secret appears once, in ``TokenCreated.token``; lists and revocations show the
id, role, team and dates only.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from orrery.duration import parse_duration
from orrery.names import check_dns_label

RoleName = Literal["admin", "operator", "member", "viewer"]
TEAM_ROLES = ("member", "viewer")
MAX_TTL_S = 10 * 365 * 86400.0


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class TokenRequest(_Model):
    """``POST /v1/tokens``: who the token is for, and for how long."""

    role: RoleName
    team: str | None = None
    name: str = Field(default="", max_length=128)
    ttl: str | float | None = Field(
        default=None, description="lifetime, e.g. 30d or seconds; none: no expiry"
    )

    @field_validator("team")
    @classmethod
    def _team(cls, v: str | None) -> str | None:
        return None if v is None else check_dns_label(v)

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, v: str | float | None) -> str | float | None:
        if v is None:
            return v
        seconds = parse_duration(v)
        if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_TTL_S:
            raise ValueError(f"must be a positive duration of at most {int(MAX_TTL_S)}s")
        return v

    @model_validator(mode="after")
    def _scope(self) -> TokenRequest:
        if self.role in TEAM_ROLES and self.team is None:
            raise ValueError(f"team: a {self.role} token needs a team")
        if self.role not in TEAM_ROLES and self.team is not None:
            raise ValueError(f"team: a {self.role} token reaches every team; give no team")
        return self

    @property
    def ttl_seconds(self) -> float | None:
        return None if self.ttl is None else parse_duration(self.ttl)


class TokenView(_Model):
    id: str
    role: str
    team: str | None = None
    name: str = ""
    created_at: float
    created_by: str = ""
    expires_at: float | None = None
    revoked_at: float | None = None


class TokenCreated(TokenView):
    token: str = Field(description="the bearer token; shown this once, never stored")
