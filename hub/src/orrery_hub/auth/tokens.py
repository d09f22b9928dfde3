"""API tokens: their format, and how they are kept. Pure: no clock, no IO.

A token reads ``orr_<id>.<secret>``: the id (public, what ``orrery token list`` shows and
``revoke`` takes) finds the row; the secret is checked against its SHA-256, which is all
the store ever holds. The secret has 256 bits of entropy, so a fast hash is enough (no
password stretching needed) and comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "orr_"
_FORMAT = re.compile(r"orr_([0-9a-f]{16})\.([A-Za-z0-9_-]{20,128})")


@dataclass(frozen=True)
class NewToken:
    id: str
    secret: str

    @property
    def text(self) -> str:
        return f"{PREFIX}{self.id}.{self.secret}"

    @property
    def digest(self) -> str:
        return digest(self.secret)


def mint() -> NewToken:
    return NewToken(id=secrets.token_hex(8), secret=secrets.token_urlsafe(32))


def parse(text: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, else None."""
    m = _FORMAT.fullmatch(text)
    return (m.group(1), m.group(2)) if m else None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)
