"""Cluster identity, unit level: the CA, join tokens (one use, expiry, the name they are
for), enrollment and revocation, the generated nats-server configuration, the renewal
threshold, and the heartbeat gate."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlmodel import select

from orrery.certs import make_csr, needs_renewal, new_key
from orrery.errors import Conflict, Forbidden, InvalidInput
from orrery.natsserver import binary
from orrery.wire import Heartbeat
from orrery_hub.identity import enroll as ops
from orrery_hub.identity import files
from orrery_hub.identity.ca import CertificateAuthority
from orrery_hub.identity.natsconf import cluster_user, hub_user, render_users
from orrery_hub.identity.service import ClusterIdentity, Known
from orrery_hub.store import Database
from orrery_hub.store.identityrows import JoinTokenRow

HOUR = 3600.0


@pytest.fixture
def paths(tmp_path: Path) -> files.IdentityPaths:
    return files.IdentityPaths.under(tmp_path / "hub")


@pytest.fixture
def ca(paths: files.IdentityPaths) -> CertificateAuthority:
    return files.ensure(paths)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database.connect(f"sqlite:///{tmp_path / 'hub.db'}")


def test_private_keys_are_0600_and_the_ca_survives_a_restart(
    paths: files.IdentityPaths, ca: CertificateAuthority
) -> None:
    for key in (paths.ca_key, paths.server_key, paths.hub_key, paths.orders_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    again = files.ensure(paths)
    assert again.cert == ca.cert  # loaded, not remade


def test_a_platform_ca_given_by_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="--ca-cert/--ca-key"):
        CertificateAuthority.load_or_create(tmp_path / "x.crt", tmp_path / "x.key", create=False)


def test_a_cluster_certificate_names_exactly_its_cluster_whatever_the_csr_asks(
    ca: CertificateAuthority,
) -> None:
    key = new_key()
    issued = ca.sign_cluster_csr(make_csr(key, "root"), cluster="eu", enrollment="e1", ttl_s=HOUR)
    cert = issued.cert
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "eu"
    assert cert.issuer == ca.cert.subject
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.public_key() == key.public_key()
    with pytest.raises(InvalidInput, match="csr"):
        ca.sign_cluster_csr(b"not a csr", cluster="eu", enrollment="e1", ttl_s=HOUR)


def test_a_join_token_is_one_time_expiring_and_for_one_name(
    db: Database, ca: CertificateAuthority
) -> None:
    with db.session() as s:
        token = ops.create_token(s, cluster="eu", ttl_s=HOUR, labels={"region": "eu-1"}, now=0)
        late = ops.create_token(s, cluster="eu", ttl_s=HOUR, labels={}, now=0)
    csr = make_csr(new_key(), "eu")

    def enroll(tok: str, cluster: str = "eu", now: float = 10) -> ops.Enrolled:
        with db.session() as s:
            return ops.enroll(
                s, ca, token=tok, cluster=cluster, csr_pem=csr, now=now,
                cert_ttl_s=HOUR, require_approval=False,
            )  # fmt: skip

    with pytest.raises(Forbidden, match="for cluster 'eu', not 'us'"):
        enroll(token, cluster="us")
    with pytest.raises(Forbidden, match="not a valid join token"):
        enroll(token[:-2] + "xx")
    with pytest.raises(Forbidden, match="expired"):
        enroll(late, now=HOUR + 1)
    e = enroll(token)
    assert e.row.state == "Approved" and e.row.labels == {"region": "eu-1"}
    assert e.row.subject.startswith("CN=eu,OU=")
    with pytest.raises(Forbidden, match="already used"):
        enroll(token)
    with db.session() as s:  # only the digest is stored
        assert all(token.split(".")[-1] not in r.digest for r in s.exec(select(JoinTokenRow)))


def test_bad_token_requests_are_refused_with_the_field_named(db: Database) -> None:
    with db.session() as s:
        with pytest.raises(InvalidInput, match="cluster"):
            ops.create_token(s, cluster="Not_A_Name", ttl_s=HOUR, labels={}, now=0)
        with pytest.raises(InvalidInput, match="ttl"):
            ops.create_token(s, cluster="eu", ttl_s=0, labels={}, now=0)


def test_revocation_removes_the_nats_user_and_reenrollment_gets_a_new_subject(
    db: Database, ca: CertificateAuthority
) -> None:
    def enroll_once() -> ops.Enrolled:
        with db.session() as s:
            tok = ops.create_token(s, cluster="eu", ttl_s=HOUR, labels={}, now=0)
        with db.session() as s:
            return ops.enroll(
                s, ca, token=tok, cluster="eu", csr_pem=make_csr(new_key(), "eu"), now=1,
                cert_ttl_s=HOUR, require_approval=True,
            )  # fmt: skip

    first = enroll_once()
    assert first.row.state == "Pending"
    with db.session() as s:
        assert ops.nats_users(ops.enrollments(s)) == []  # pending: no NATS user yet
        ops.set_state(s, "eu", "Approved", now=2)
    with db.session() as s:
        assert [u.subject for u in ops.nats_users(ops.enrollments(s))] == [first.row.subject]
        ops.set_state(s, "eu", "Revoked", now=3)
    with db.session() as s:
        assert ops.nats_users(ops.enrollments(s)) == []
        with pytest.raises(Conflict, match="revoked"):
            ops.set_state(s, "eu", "Approved", now=4)
    second = enroll_once()
    assert second.row.subject != first.row.subject  # the old certificate maps to no one


def test_the_generated_config_is_valid_for_the_real_nats_server(
    paths: files.IdentityPaths, ca: CertificateAuthority
) -> None:
    conf = files.write_nats_conf(paths, host="127.0.0.1", port=4999)
    files.write_users(paths, [cluster_user("eu", "CN=eu,OU=e1,O=orrery-cluster")])
    text = paths.nats_users.read_text()
    assert '"orrery.v1.cluster.eu.report.>"' in text
    assert '"orrery.v1.cluster.eu.orders", "orrery.v1.cluster.eu.logs", "_INBOX_eu.>"' in text
    assert "allow_responses: true" in text  # answers to the hub's log requests
    assert "verify_and_map: true" in conf.read_text()
    out = subprocess.run([binary(), "-c", str(conf), "-t"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + out.stdout


def test_a_cluster_user_may_publish_only_its_reports_and_read_only_its_orders() -> None:
    u = cluster_user("eu", "CN=eu,OU=e1,O=orrery-cluster")
    assert u.publish == ("orrery.v1.cluster.eu.report.>",)
    assert u.subscribe == ("orrery.v1.cluster.eu.orders", "orrery.v1.cluster.eu.logs",
                           "_INBOX_eu.>")
    # It may answer the requests it receives: only the hub's log requests on its own
    # subject (it cannot read another cluster's requests, nor the hub's heartbeat replies).
    assert u.allow_responses
    hub = hub_user("CN=orrery-hub")
    assert hub.publish == ("orrery.v1.cluster.*.orders", "orrery.v1.cluster.*.logs")
    # A quote in a subject cannot break out of its string.
    assert '\\"' in render_users([cluster_user("eu", 'CN=eu",x')])


@pytest.mark.parametrize(
    ("now", "due"), [(0, False), (79.9, False), (80, True), (99, True), (200, True)]
)
def test_renewal_starts_when_a_fifth_of_the_validity_is_left(now: float, due: bool) -> None:
    assert needs_renewal(0, 100, now) is due


def test_heartbeats_only_from_approved_clusters_with_their_bound_labels(
    paths: files.IdentityPaths,
) -> None:
    ident = ClusterIdentity(paths, manage_nats=False, require_approval=False, cert_ttl_s=HOUR)
    ident.known = {
        "eu": Known("Approved", {"region": "eu-west-1"}),
        "gone": Known("Revoked", {}),
        "new": Known("Pending", {}),
    }

    def hb(cluster: str, labels: dict[str, str]) -> Heartbeat:
        return Heartbeat(
            sender="x", seq=1, cluster=cluster, incarnation="i", labels=labels, lease_s=2
        )

    assert ident.check(hb("eu", {"region": "eu-west-1"})) == (None, {"region": "eu-west-1"})
    assert ident.check(hb("eu", {})) == (None, {"region": "eu-west-1"})
    reason, _ = ident.check(hb("eu", {"region": "us-east-1"}))
    assert reason is not None and "enrolled as 'eu-west-1'" in reason
    reason, _ = ident.check(hb("eu", {"gpu": "640xH100"}))
    assert reason is not None and "not bound at enrollment" in reason
    assert "has not enrolled" in (ident.check(hb("rogue", {}))[0] or "")
    assert "revoked" in (ident.check(hb("gone", {}))[0] or "")
    assert "approve" in (ident.check(hb("new", {}))[0] or "")
    # Audited once per change of reason, not at every heartbeat.
    assert ident.should_audit("eu", "r1") and not ident.should_audit("eu", "r1")
    assert ident.should_audit("eu", "r2")


# ---- a renewal interrupted by a crash (key and certificate are two files) -----------------


def _spoke_with_cert(tmp_path: Path, ca: CertificateAuthority) -> tuple[object, bytes]:
    """A spoke identity folder holding a key and its certificate; returns (identity, old cert)."""
    from orrery.certs import key_pem, write_secret
    from orrery.clusterid import SpokeIdentity

    ident = SpokeIdentity.under(tmp_path / "spoke")
    ident.root.mkdir(parents=True)
    key = new_key()
    cert = ca.sign_cluster_csr(make_csr(key, "eu"), cluster="eu", enrollment="e1", ttl_s=HOUR)
    write_secret(ident.key, key_pem(key))
    ident.cert.write_bytes(cert.pem)
    ident.ca.write_bytes(ca.pem)
    return ident, cert.pem


def _pair_matches(ident: object) -> bool:
    import ssl

    from orrery.clusterid import SpokeIdentity

    assert isinstance(ident, SpokeIdentity)
    ctx = ssl.create_default_context()
    try:
        ctx.load_cert_chain(str(ident.cert), str(ident.key))  # refuses a key of another cert
    except ssl.SSLError:
        return False
    return True


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_crash_inside_a_renewal_leaves_a_usable_key_and_certificate(
    tmp_path: Path, ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    """crash_at=1: before any rename (the old pair must stay); 2: between the key's rename and
    the certificate's (the new pair must be completed on the next start)."""
    import os
    import ssl

    from orrery import clusterid

    ident, old_cert = _spoke_with_cert(tmp_path, ca)
    assert isinstance(ident, clusterid.SpokeIdentity)
    new = new_key()
    new_cert = ca.sign_cluster_csr(make_csr(new, "eu"), cluster="eu", enrollment="e1", ttl_s=HOUR)
    real_replace = os.replace
    calls = []

    def crashing(src: object, dst: object) -> None:
        calls.append(src)
        if len(calls) == crash_at:
            raise SystemExit("power cut")  # nothing after this point runs
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", crashing)
    with pytest.raises(SystemExit):
        ident.install(new, new_cert.pem, ssl.create_default_context())
    monkeypatch.setattr(os, "replace", real_replace)
    if crash_at == 2:
        assert not _pair_matches(ident)  # what a naive reader would see: new key, old cert

    # The restarted spoke: exists() recovers before anything reads the pair.
    restarted = clusterid.SpokeIdentity.under(tmp_path / "spoke")
    (restarted.root / "enrollment.json").write_text("{}")
    assert restarted.exists()
    assert _pair_matches(restarted)
    assert restarted.cert.read_bytes() == (old_cert if crash_at == 1 else new_cert.pem)
    assert not list(restarted.root.glob("*.new"))
    assert stat.S_IMODE(restarted.key.stat().st_mode) == 0o600


def test_a_renewal_installs_both_files_and_refuses_a_certificate_for_another_key(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    import ssl

    from orrery.clusterid import SpokeIdentity

    ident, _ = _spoke_with_cert(tmp_path, ca)
    assert isinstance(ident, SpokeIdentity)
    new, other = new_key(), new_key()
    cert = ca.sign_cluster_csr(make_csr(new, "eu"), cluster="eu", enrollment="e1", ttl_s=HOUR)
    with pytest.raises(InvalidInput, match="not for this key"):
        ident.install(other, cert.pem, ssl.create_default_context())
    assert _pair_matches(ident)
    ident.install(new, cert.pem, ssl.create_default_context())
    assert ident.cert.read_bytes() == cert.pem and _pair_matches(ident)
    assert stat.S_IMODE(ident.key.stat().st_mode) == 0o600


def test_the_ca_hash_is_the_sha256_of_the_ca_public_key(ca: CertificateAuthority) -> None:
    import hashlib

    from cryptography.hazmat.primitives import serialization

    from orrery.certs import ca_hash, check_ca_hash

    spki = ca.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    want = "sha256:" + hashlib.sha256(spki).hexdigest()
    assert ca_hash(ca.pem) == want
    assert check_ca_hash(want.upper().replace("SHA256:", "sha256:")) == want
    for bad in ("", "md5:" + "0" * 64, "sha256:abc", "sha256:" + "g" * 64):
        with pytest.raises(ValueError, match="sha256:<64 hex digits>"):
            check_ca_hash(bad)
