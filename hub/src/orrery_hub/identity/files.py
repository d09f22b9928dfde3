"""Where the hub keeps its identity (``<hub state>/identity/``), and making what is missing.

ca.crt, ca.key (0600)                 the CA (or --ca-cert/--ca-key: a platform team's own)
nats-server.crt, nats-server.key      the nats-server's TLS certificate
hub-nats.crt, hub-nats.key            the hub's NATS client certificate (CN=orrery-hub)
orders.key (0600), orders.pub         the Ed25519 order-signing key (PKCS8 / SPKI PEM)
nats.conf, nats-users.conf, nats.pid  the generated nats-server configuration
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from orrery.certs import key_pem, write_public, write_secret
from orrery_hub.identity.ca import CertificateAuthority, nats_user
from orrery_hub.identity.natsconf import NatsUser, hub_user, render_main, render_users
from orrery_hub.identity.orderkey import load_or_create_order_key


@dataclass(frozen=True)
class IdentityPaths:
    root: Path
    ca_cert: Path
    ca_key: Path

    @classmethod
    def under(
        cls, state_dir: Path, *, ca_cert: Path | None = None, ca_key: Path | None = None
    ) -> IdentityPaths:
        root = (state_dir / "identity").resolve()
        return cls(root, ca_cert or root / "ca.crt", ca_key or root / "ca.key")

    @property
    def server_cert(self) -> Path:
        return self.root / "nats-server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "nats-server.key"

    @property
    def hub_cert(self) -> Path:
        return self.root / "hub-nats.crt"

    @property
    def hub_key(self) -> Path:
        return self.root / "hub-nats.key"

    @property
    def orders_key(self) -> Path:
        return self.root / "orders.key"

    @property
    def orders_pub(self) -> Path:
        return self.root / "orders.pub"

    @property
    def nats_conf(self) -> Path:
        return self.root / "nats.conf"

    @property
    def nats_users(self) -> Path:
        return self.root / "nats-users.conf"

    @property
    def nats_pid(self) -> Path:
        return self.root / "nats.pid"


def ensure(
    paths: IdentityPaths,
    *,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    create_ca: bool = True,
) -> CertificateAuthority:
    """The CA, the server and hub certificates and the order key; made where missing."""
    paths.root.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.root, 0o700)
    ca = CertificateAuthority.load_or_create(paths.ca_cert, paths.ca_key, create=create_ca)
    if not paths.server_cert.exists() or not paths.server_key.exists():
        cert, key = ca.issue_server(hosts)
        write_secret(paths.server_key, key_pem(key))
        write_public(paths.server_cert, cert.pem)
    if not paths.hub_cert.exists() or not paths.hub_key.exists():
        cert, key = ca.issue_hub()
        write_secret(paths.hub_key, key_pem(key))
        write_public(paths.hub_cert, cert.pem)
    ensure_order_key(paths)
    return ca


def ensure_order_key(paths: IdentityPaths) -> bytes:
    """The order-signing public key (SPKI PEM) enrollment hands every spoke to pin."""
    load_or_create_order_key(paths.root.parent)
    return paths.orders_pub.read_bytes()


def hub_subject(paths: IdentityPaths) -> str:
    from cryptography import x509

    return nats_user(x509.load_pem_x509_certificate(paths.hub_cert.read_bytes()).subject)


def write_nats_conf(
    paths: IdentityPaths,
    *,
    host: str,
    port: int,
    name: str = "nats",
    cluster_port: int | None = None,
    routes: tuple[str, ...] = (),
) -> Path:
    """``<name>.conf`` (pid file ``<name>.pid``) for one nats-server; with ``cluster_port``
    and ``routes``, one member of a cluster (``orrery up --ha`` writes nats-0, -1, -2)."""
    conf = paths.root / f"{name}.conf"
    write_public(
        conf,
        render_main(
            host=host,
            port=port,
            cert=paths.server_cert,
            key=paths.server_key,
            ca=paths.ca_cert,
            pid_file=paths.root / f"{name}.pid",
            users=paths.nats_users,
            cluster_port=cluster_port,
            routes=routes,
        ).encode(),
    )
    if not paths.nats_users.exists():
        write_users(paths, [])
    return conf


def write_users(paths: IdentityPaths, clusters: list[NatsUser]) -> None:
    write_public(paths.nats_users, render_users([hub_user(hub_subject(paths)), *clusters]).encode())


def reload_nats(paths: IdentityPaths) -> bool:
    """Ask every nats-server running from a configuration here (one, or the members of a
    cluster) to reload it: SIGHUP to the pid in each pid file. False when none runs."""
    reloaded = False
    for pid_file in sorted(paths.root.glob("nats*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
            # A stale pid file could name a process that is not nats-server any more.
            cmdline = Path(f"/proc/{pid}/cmdline")
            if cmdline.parent.parent.exists() and b"nats-server" not in cmdline.read_bytes():
                continue
            os.kill(pid, signal.SIGHUP)
            reloaded = True
        except (OSError, ValueError):
            continue
    return reloaded
