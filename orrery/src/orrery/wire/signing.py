"""Signed orders, sans-IO: the hub signs every order with Ed25519; a spoke verifies it
against the key it pinned at enrollment and refuses a forged, replayed or expired one.

What is signed (the *canonical bytes*): the message as JSON with ``sig`` left out, ``null``
fields left out, keys sorted and no whitespace. It is computed from the decoded message on
both sides, so how the sender spaced or ordered its JSON does not matter, and every field a
receiver acts on — sender, seq, expiry, job, epoch, command, env — is covered.

Replay: an order carries ``seq`` (never repeated by a hub, even across its restarts) and
``expires_at`` (hub clock + a short TTL). A verifier remembers every signature it accepted
until that order expires, so the same bytes are refused a second time and, once expired,
refused as expired. Its memory is bounded: past ``max_entries`` it forgets the order that
expires first and from then on refuses anything that expires no later (the safe side).
Across a restart, the caller keeps ``horizon`` and passes it back as ``floor``: everything
accepted before then expires no later, so none of it can be replayed into the new process.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
from collections.abc import Callable
from enum import StrEnum
from typing import TypeVar, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel

from orrery.wire.messages import AnyOrder, Assignment, Kill, Prefetch

SIGNATURE_BYTES = 64
OrderT = TypeVar("OrderT", bound=Assignment | Kill | Prefetch)


class Verdict(StrEnum):
    OK = "ok"
    FORGED = "forged"  # a signature that is not the pinned key's over these bytes
    REPLAYED = "replayed"  # a signature already accepted
    EXPIRED = "expired"  # past its expiry (allowing for clock skew)
    UNSIGNED = "unsigned"  # no signature or no expiry: what an N-1 hub or a stranger sends


def canonical_bytes(message: BaseModel) -> bytes:
    data = message.model_dump(mode="json", exclude={"sig"}, exclude_none=True)
    # An order's expiry is folded into ``sig`` on the wire (see orrery.wire.messages), so
    # the dump above leaves it out: sign it all the same.
    expires = getattr(message, "expires_at", None)
    if expires is not None:
        data["expires_at"] = expires
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(order: OrderT, key: Ed25519PrivateKey) -> OrderT:
    """The order with ``sig`` set: Ed25519 over its canonical bytes, base64."""
    sig = key.sign(canonical_bytes(order))
    signed = order.model_copy(update={"sig": base64.b64encode(sig).decode()})
    return cast(OrderT, signed)  # model_copy keeps the type; mypy sees only the bound


def _signature(order: AnyOrder) -> bytes | None:
    if order.sig is None:
        return None
    try:
        raw = base64.b64decode(order.sig, validate=True)
    except (binascii.Error, ValueError):
        return b""
    return raw


class OrderVerifier:
    """Checks orders against one pinned hub key; remembers what it accepted until expiry."""

    def __init__(
        self,
        public_key: Ed25519PublicKey,
        clock: Callable[[], float],
        max_skew_s: float = 10.0,
        *,
        max_entries: int = 100_000,
        floor: float = float("-inf"),
    ) -> None:
        self.key = public_key
        self.clock = clock
        self.max_skew_s = max_skew_s
        self.max_entries = max_entries
        self._seen: dict[bytes, float] = {}  # signature -> when it may be forgotten
        self._expiry: list[tuple[float, bytes]] = []  # heap of the same, soonest first
        # Refuse what expires no later: we may have forgotten it. A restarted spoke passes
        # the last horizon it saved, so orders accepted before the restart stay refused.
        self._floor = floor
        self.horizon = floor  # the latest moment any accepted order may be forgotten

    def check(self, order: AnyOrder) -> Verdict:
        sig = _signature(order)
        if sig is None or order.expires_at is None:
            return Verdict.UNSIGNED
        if len(sig) != SIGNATURE_BYTES:
            return Verdict.FORGED
        try:
            self.key.verify(sig, canonical_bytes(order))
        except InvalidSignature:
            return Verdict.FORGED
        now = self.clock()
        forget_at = order.expires_at + self.max_skew_s
        if now > forget_at:
            return Verdict.EXPIRED
        self._prune(now)
        if sig in self._seen or forget_at <= self._floor:
            return Verdict.REPLAYED
        self._remember(sig, forget_at)
        return Verdict.OK

    def __len__(self) -> int:
        return len(self._seen)

    def _prune(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, sig = heapq.heappop(self._expiry)
            self._seen.pop(sig, None)

    def _remember(self, sig: bytes, forget_at: float) -> None:
        while len(self._seen) >= self.max_entries:
            at, old = heapq.heappop(self._expiry)
            self._seen.pop(old, None)
            self._floor = max(self._floor, at)
        self._seen[sig] = forget_at
        heapq.heappush(self._expiry, (forget_at, sig))
        self.horizon = max(self.horizon, forget_at)


# ---- keys as PEM text (files are the caller's business) ------------------------------


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """Parse a PKCS8 PEM Ed25519 private key; ValueError naming what is wrong."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"not an Ed25519 key but {type(key).__name__}")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """Parse an SPKI PEM Ed25519 public key; ValueError naming what is wrong."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 key but {type(key).__name__}")
    return key


__all__ = [
    "OrderVerifier",
    "Verdict",
    "canonical_bytes",
    "load_private_key",
    "load_public_key",
    "private_key_pem",
    "public_key_pem",
    "sign",
]
