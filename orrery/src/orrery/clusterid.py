"""A spoke's enrolled identity, under ``<spoke state>/identity/`` (in the core: the spoke
agent and the local federation, which enrolls its spokes itself, both use it):

    cluster.key (0600)   its private key: made here, never leaves this folder
    cluster.crt          its client certificate, for exactly its cluster name
    ca.crt               the hub CA (verifies nats-server's certificate)
    hub-orders.pub       the hub's order-signing key, pinned at enrollment
    enrollment.json      cluster name, the labels the admin bound, the NATS URLs

``join`` enrolls once with a one-time token; a restarted spoke finds these and needs no
token. ``maybe_renew`` asks the hub for a new certificate over NATS once 20% of the
validity is left, and loads it into the TLS context: the next (re)connection uses it.

A renewal replaces two files, the key and the certificate; a crash between the two must not
leave a key with a certificate for another key (the spoke would have to enroll again). So
``install`` writes both as ``.new`` files, fsyncs them and the folder, then renames the key
and then the certificate. ``recover`` (run before the pair is read) finishes or discards an
interrupted renewal: both ``.new`` files left means no rename happened (the old pair is
intact: drop them); only ``cluster.crt.new`` left means the new key is in place (finish
with the certificate). It checks the result by comparing the public keys.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orrery.certs import (
    ca_hash,
    check_ca_hash,
    key_pem,
    make_csr,
    new_key,
    validity,
    write_public,
    write_secret,
)
from orrery.errors import InvalidInput, Unavailable

log = logging.getLogger("orrery.spoke")

ENROLL_PATH = "/v1/clusters:enroll"
CA_PATH = "/v1/clusters:ca"


def inbox_prefix(cluster: str) -> str:
    """Replies to this spoke's requests arrive here; nats-server lets no other client read it."""
    return f"_INBOX_{cluster}"


@dataclass(frozen=True)
class SpokeIdentity:
    root: Path

    @classmethod
    def under(cls, state_dir: Path) -> SpokeIdentity:
        return cls((state_dir / "identity").resolve())

    @property
    def key(self) -> Path:
        return self.root / "cluster.key"

    @property
    def cert(self) -> Path:
        return self.root / "cluster.crt"

    @property
    def ca(self) -> Path:
        return self.root / "ca.crt"

    @property
    def orders_pub(self) -> Path:
        return self.root / "hub-orders.pub"

    @property
    def info_file(self) -> Path:
        return self.root / "enrollment.json"

    def exists(self) -> bool:
        self.recover()
        return all(p.exists() for p in (self.key, self.cert, self.ca, self.info_file))

    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.info_file.read_text())
        return data

    def ssl_context(self) -> ssl.SSLContext:
        self.recover()
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx

    def join(
        self,
        hub_url: str,
        token: str,
        cluster: str,
        *,
        ca_hash: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Enroll: a new key pair, its CSR to the hub with the join token, the certificate back.

        With ``ca_hash`` (``sha256:<hex>`` of the CA's SubjectPublicKeyInfo) the hub's CA is
        pinned: over HTTPS the CA is fetched first (public, no token) and checked, then the
        token goes only over TLS verified against that CA; over HTTP the answer's CA is
        checked. A mismatch refuses the enrollment and writes nothing."""
        pin = _pin(ca_hash)
        base = hub_url.rstrip("/")
        deadline = time.monotonic() + timeout
        verify: ssl.SSLContext | bool = True
        pinned: bytes | None = None
        if pin is not None and base.startswith("https://"):
            # Public information, fetched without verification, then checked against the pin.
            r = _retrying(
                lambda: httpx.get(base + CA_PATH, timeout=10, verify=False), hub_url, deadline
            )
            pinned = _ca_from(r, hub_url).encode()
            _check_pin(pinned, pin, hub_url)
            verify = ssl.create_default_context(cadata=pinned.decode())
        key = new_key()
        body = {"cluster": cluster, "token": token, "csr": make_csr(key, cluster).decode()}
        r = _retrying(
            lambda: httpx.post(base + ENROLL_PATH, json=body, timeout=10, verify=verify),
            hub_url,
            deadline,
        )
        if r.status_code != 200:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise InvalidInput(f"--join: the hub refused enrollment ({r.status_code}): {detail}")
        out = r.json()
        if pin is not None:
            _check_pin(str(out.get("ca", "")).encode(), pin, hub_url)
        elif not base.startswith("https://"):
            log.warning(
                "enrolling without --ca-hash over plain HTTP: the hub CA is trusted on first use",
                extra={"cluster": cluster},
            )
        write_secret(self.key, key_pem(key))
        write_public(self.cert, out["certificate"].encode())
        write_public(self.ca, out["ca"].encode())
        if out.get("ordersKey"):
            write_public(self.orders_pub, out["ordersKey"].encode())
        info = {
            "cluster": out["cluster"],
            "state": out["state"],
            "labels": out["labels"],
            "natsUrls": out["natsUrls"],
        }
        write_public(self.info_file, json.dumps(info, indent=2).encode())
        log.info("enrolled", extra={"cluster": cluster, "state": out["state"]})

    def validity(self) -> tuple[float, float]:
        return validity(self.cert)

    def new_csr(self, cluster: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        key = new_key()
        return key, make_csr(key, cluster)

    def install(
        self, key: ec.EllipticCurvePrivateKey, cert_pem: bytes, ctx: ssl.SSLContext
    ) -> None:
        """Keep a renewed certificate (atomically with its key, see the module docstring)
        and load it into the live TLS context."""
        if not _same_key(key.public_key(), cert_pem):
            raise InvalidInput("certificate: the renewed certificate is not for this key")
        key_new, cert_new = _new(self.key), _new(self.cert)
        _write_synced(key_new, key_pem(key), 0o600)
        _write_synced(cert_new, cert_pem, 0o644)
        _sync_dir(self.root)
        os.replace(key_new, self.key)
        os.replace(cert_new, self.cert)
        _sync_dir(self.root)
        ctx.load_cert_chain(str(self.cert), str(self.key))

    def recover(self) -> None:
        """Finish or discard a renewal a crash interrupted (idempotent; see the module doc)."""
        key_new, cert_new = _new(self.key), _new(self.cert)
        if key_new.exists():
            # No rename happened yet: the old pair is whole. Drop the half-done renewal.
            key_new.unlink()
            cert_new.unlink(missing_ok=True)
            log.warning(
                "discarded an interrupted certificate renewal", extra={"path": str(self.root)}
            )
        elif cert_new.exists():
            try:
                finish = _same_key(load_key(self.key).public_key(), cert_new.read_bytes())
            except (OSError, ValueError, AssertionError):
                finish = False
            if finish:
                os.replace(cert_new, self.cert)
                log.info(
                    "finished an interrupted certificate renewal", extra={"path": str(self.root)}
                )
            else:
                cert_new.unlink()
        else:
            return
        _sync_dir(self.root)


def _pin(ca_hash: str | None) -> str | None:
    if ca_hash is None or not ca_hash.strip():
        return None
    try:
        return check_ca_hash(ca_hash)
    except ValueError as exc:
        raise InvalidInput(f"--ca-hash: {exc}") from None


def _check_pin(ca_pem: bytes, pin: str, hub_url: str) -> None:
    try:
        got = ca_hash(ca_pem)
    except ValueError:
        raise InvalidInput(
            f"--ca-hash: the hub at {hub_url} sent no valid CA certificate"
        ) from None
    if not hmac.compare_digest(got, pin):
        raise InvalidInput(
            f"--ca-hash: the hub at {hub_url} presented CA {got}, not the pinned {pin}; "
            "refusing to enroll (wrong hub, or someone in between)"
        )


def _ca_from(r: httpx.Response, hub_url: str) -> str:
    try:
        ca = r.json()["ca"] if r.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        ca = None
    if not isinstance(ca, str):
        raise InvalidInput(f"--join: the hub at {hub_url} did not serve its CA ({r.status_code})")
    return ca


def _retrying(call: Callable[[], httpx.Response], hub_url: str, deadline: float) -> httpx.Response:
    while True:
        try:
            return call()
        except httpx.TransportError as exc:
            if time.monotonic() > deadline:
                raise Unavailable(f"--join: cannot reach the hub at {hub_url}: {exc}") from None
            time.sleep(0.5)


def _new(path: Path) -> Path:
    return path.with_name(path.name + ".new")


def _write_synced(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_key(public: ec.EllipticCurvePublicKey, cert_pem: bytes) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return False
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == public.public_bytes(*fmt)


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    k = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(k, ec.EllipticCurvePrivateKey)
    return k
