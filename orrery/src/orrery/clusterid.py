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
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orrery.certs import (
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
        return all(p.exists() for p in (self.key, self.cert, self.ca, self.info_file))

    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.info_file.read_text())
        return data

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx

    def join(self, hub_url: str, token: str, cluster: str, *, timeout: float = 30.0) -> None:
        """Enroll: a new key pair, its CSR to the hub with the join token, the certificate back."""
        key = new_key()
        body = {"cluster": cluster, "token": token, "csr": make_csr(key, cluster).decode()}
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = httpx.post(hub_url.rstrip("/") + ENROLL_PATH, json=body, timeout=10)
                break
            except httpx.TransportError as exc:
                if time.monotonic() > deadline:
                    raise Unavailable(f"--join: cannot reach the hub at {hub_url}: {exc}") from None
                time.sleep(0.5)
        if r.status_code != 200:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise InvalidInput(f"--join: the hub refused enrollment ({r.status_code}): {detail}")
        out = r.json()
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
        """Keep a renewed certificate and load it into the live TLS context."""
        write_secret(self.key, key_pem(key))
        write_public(self.cert, cert_pem)
        ctx.load_cert_chain(str(self.cert), str(self.key))


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    k = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(k, ec.EllipticCurvePrivateKey)
    return k
