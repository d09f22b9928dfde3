"""The hub's order-signing key: made once, kept under ``<state>/identity/``.

    orders.key   Ed25519 private key, PKCS8 PEM, mode 0600 — never leaves the hub
    orders.pub   its public key, SPKI PEM — what enrollment gives every spoke to pin

Losing ``orders.key`` means every spoke must be given the new ``orders.pub`` (re-enroll),
so it is created only when absent and never overwritten.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orrery.errors import InvalidInput
from orrery.wire.signing import load_private_key, private_key_pem, public_key_pem

log = logging.getLogger("orrery.hub")

KEY_FILE = "orders.key"
PUB_FILE = "orders.pub"


def identity_dir(state_dir: Path) -> Path:
    return state_dir / "identity"


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: two hubs starting on one state folder must not both write a key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_or_create_order_key(state_dir: Path) -> Ed25519PrivateKey:
    """The hub's signing key, created (with its public half) at the first start."""
    folder = identity_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path, pub_path = folder / KEY_FILE, folder / PUB_FILE
    if key_path.exists():
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if mode & 0o077:
            log.warning(
                "order-signing key is readable by others; run chmod 600 on it",
                extra={"path": str(key_path), "mode": oct(mode)},
            )
        try:
            key = load_private_key(key_path.read_bytes())
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                f"--state: {key_path} is not an Ed25519 PKCS8 PEM key ({exc})"
            ) from None
    else:
        key = Ed25519PrivateKey.generate()
        try:
            _write_new(key_path, private_key_pem(key), 0o600)
        except FileExistsError:  # another hub won the race: use its key
            return load_or_create_order_key(state_dir)
        log.info("created the order-signing key", extra={"path": str(key_path)})
    pub = public_key_pem(key.public_key())
    if not pub_path.exists() or pub_path.read_bytes() != pub:
        tmp = pub_path.with_suffix(".pub.tmp")
        tmp.write_bytes(pub)
        tmp.chmod(0o644)
        tmp.replace(pub_path)
    return key


__all__ = ["KEY_FILE", "PUB_FILE", "identity_dir", "load_or_create_order_key"]
