"""Key pairs, certificate signing requests and the renewal rule, shared by the hub's CA and
the spoke that enrolls with it (the spoke never imports the hub).

Private keys are ECDSA P-256, written 0600 and never logged.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RENEW_REMAINING = 0.2  # renew when 20% of the validity is left (Karmada's threshold)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_csr(key: ec.EllipticCurvePrivateKey, cluster: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cluster)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


CA_HASH_PREFIX = "sha256:"


def ca_hash(ca_pem: bytes) -> str:
    """``sha256:<hex>`` of a CA certificate's SubjectPublicKeyInfo (DER): what a joining spoke
    pins (``--ca-hash``), like kubeadm's ``--discovery-token-ca-cert-hash``. ValueError when
    ``ca_pem`` is not a PEM certificate."""
    import hashlib

    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CA_HASH_PREFIX + hashlib.sha256(spki).hexdigest()


def check_ca_hash(text: str) -> str:
    """The pin, normalised (lowercase); InvalidInput-ready message as ValueError otherwise."""
    value = text.strip().lower()
    digest = value.removeprefix(CA_HASH_PREFIX)
    if (
        not value.startswith(CA_HASH_PREFIX)
        or len(digest) != 64
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise ValueError("must read sha256:<64 hex digits>")
    return value


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` readable by this user only, atomically (never a moment at 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def validity(cert_file: Path) -> tuple[float, float]:
    """(not before, not after) of a PEM certificate, as Unix times."""
    c = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return c.not_valid_before_utc.timestamp(), c.not_valid_after_utc.timestamp()


def needs_renewal(
    not_before: float, not_after: float, now: float, *, remaining: float = RENEW_REMAINING
) -> bool:
    """True once ``remaining`` of the certificate's validity is left."""
    return now >= not_after - remaining * (not_after - not_before)
