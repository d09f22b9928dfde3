"""The hub's small certificate authority: it signs the nats-server's certificate, the hub's
own NATS client certificate, and one client certificate per enrolled cluster.

Keys are ECDSA P-256 (fast to make, supported by every TLS stack nats-server and Python
use). Private keys are written 0600 and never logged. A platform team with its own CA
passes ``--ca-cert/--ca-key`` instead; nothing here needs to own the CA files.

A cluster certificate's subject is ``CN=<cluster>,OU=<enrollment id>,O=orrery-cluster``.
nats-server maps it to a user by that full subject (``verify_and_map``), so a certificate
from an earlier, revoked enrollment of the same name maps to no user at all.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orrery.certs import cert_pem, key_pem, new_key, write_public, write_secret
from orrery.errors import InvalidInput

CLUSTER_ORG = "orrery-cluster"
GATEWAY_ORG = "orrery-gateway"
HUB_CN = "orrery-hub"


def cluster_subject(cluster: str, enrollment: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, CLUSTER_ORG),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, enrollment),
            x509.NameAttribute(NameOID.COMMON_NAME, cluster),
        ]
    )


def gateway_subject(gateway: str, enrollment: str) -> x509.Name:
    """``CN=gateway-<id>,OU=<enrollment>,O=orrery-gateway``: never a cluster's subject."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, GATEWAY_ORG),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, enrollment),
            x509.NameAttribute(NameOID.COMMON_NAME, f"gateway-{gateway}"),
        ]
    )


def nats_user(subject: x509.Name) -> str:
    """The user name nats-server derives from a certificate's subject (RFC 2253 order)."""
    return subject.rfc4514_string()


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return cert_pem(self.cert)

    @property
    def serial(self) -> str:
        return format(self.cert.serial_number, "x")

    @property
    def not_after(self) -> float:
        return self.cert.not_valid_after_utc.timestamp()


class CertificateAuthority:
    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def load_or_create(
        cls, cert_path: Path, key_path: Path, *, create: bool = True
    ) -> CertificateAuthority:
        if cert_path.exists() and key_path.exists():
            return cls.load(cert_path, key_path)
        if not create:
            raise InvalidInput(f"--ca-cert/--ca-key: {cert_path} or {key_path} does not exist")
        key = new_key()
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orrery hub CA")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        write_secret(key_path, key_pem(key))
        write_public(cert_path, cert_pem(cert))
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"--ca-cert/--ca-key: cannot load the CA: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InvalidInput("--ca-key: only an EC (P-256) CA key is supported")
        return cls(cert, key)

    @property
    def pem(self) -> bytes:
        return cert_pem(self.cert)

    def _issue(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey,
        *,
        ttl_s: float,
        server: bool = False,
        hosts: tuple[str, ...] = (),
    ) -> Issued:
        now = dt.datetime.now(dt.UTC)
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(seconds=ttl_s))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    # A server's certificate is also its client certificate on the routes
                    # between clustered nats-servers (orrery up --ha), which verify each other.
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                    if server
                    else [ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if hosts:
            sans: list[x509.GeneralName] = []
            for h in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    sans.append(x509.DNSName(h))
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return Issued(b.sign(self.key, hashes.SHA256()))

    def issue_server(
        self, hosts: tuple[str, ...], *, ttl_s: float = 365 * 86400
    ) -> tuple[Issued, ec.EllipticCurvePrivateKey]:
        key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orrery nats-server")])
        return self._issue(name, key.public_key(), ttl_s=ttl_s, server=True, hosts=hosts), key

    def issue_hub(self, *, ttl_s: float = 365 * 86400) -> tuple[Issued, ec.EllipticCurvePrivateKey]:
        key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HUB_CN)])
        return self._issue(name, key.public_key(), ttl_s=ttl_s), key

    def sign_cluster_csr(
        self, csr_pem: bytes, *, cluster: str, enrollment: str, ttl_s: float
    ) -> Issued:
        """A client certificate for exactly ``cluster``: whatever the CSR asks for, only its
        public key is used (the subject is set here), after checking its self-signature."""
        return self.sign_csr(csr_pem, cluster_subject(cluster, enrollment), ttl_s=ttl_s)

    def sign_csr(self, csr_pem: bytes, subject: x509.Name, *, ttl_s: float) -> Issued:
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise InvalidInput("csr: not a PEM certificate signing request") from None
        if not csr.is_signature_valid:
            raise InvalidInput("csr: its signature does not verify")
        pub = csr.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey):
            raise InvalidInput("csr: the key must be EC P-256")
        return self._issue(subject, pub, ttl_s=ttl_s)
