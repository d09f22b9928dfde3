"""API tokens as stored: the SHA-256 of the secret, never the token itself."""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class TokenRow(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=32)  # the public part of the token
    digest: str = Field(max_length=64)  # sha256 hex of the secret
    role: str = Field(max_length=16)
    team: str | None = Field(default=None, max_length=63)
    name: str = Field(default="", max_length=128)  # who or what it is for
    created_at: float
    created_by: str = Field(default="", max_length=128)
    expires_at: float | None = None
    revoked_at: float | None = None
