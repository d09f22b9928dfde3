"""Cluster identity end to end, real processes: nats-server with TLS and a user per
enrolled cluster, spokes enrolled with one-time join tokens.

- a client without a certificate (or without TLS) is refused;
- with spoke A's own certificate, a client cannot read B's orders, log requests or
  replies, publish B's reports, or publish any order or log request: nats-server answers
  "permissions violation";
- a heartbeat from A that claims another region than the one bound at enrollment is
  refused, with the reason in the reply and in the audit log;
- ``orrery spoke --join`` enrolls with a token once; the token cannot be used again; the
  labels the spoke says are ignored for the enrolled ones;
- a revoked cluster is dropped by nats-server at once, cannot reconnect, and its slice
  moves to another cluster where the job finishes.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.natsclients import connect_watched, refused

from e2e.conftest import final, manifest, spokes, wait_for
from orrery.clusterid import SpokeIdentity
from orrery.federation import Federation
from orrery.wire import Heartbeat, HeartbeatAck, NodeReport, Subjects, decode, encode

pytestmark = pytest.mark.e2e


def creds(fed: Federation, cluster: str) -> ssl.SSLContext:
    return SpokeIdentity.under(fed.state / "spokes" / cluster).ssl_context()


def ca_only(fed: Federation) -> ssl.SSLContext:
    return ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(fed.state / "hub" / "identity" / "ca.crt")
    )


async def connect_as(fed: Federation, cluster: str) -> tuple[Any, list[str]]:
    assert fed.nats is not None
    return await connect_watched(fed.nats.url, creds(fed, cluster), f"_INBOX_{cluster}")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [sys.executable, "-m", "orrery.cli.main", *args], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    return p


async def until(pred: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_nats_refuses_anonymous_clients_and_confines_each_cluster_to_its_own_subjects(  # type: ignore[no-untyped-def]
    federation,
) -> None:
    fed: Federation = federation(spokes("a", "b"))
    assert fed.nats is not None
    url = fed.nats.url
    assert url.startswith("tls://")
    # No certificate, or no TLS at all: refused.
    assert await refused(url, ca_only(fed))
    assert await refused(url.replace("tls://", "nats://"), None)

    nc, errors = await connect_as(fed, "a")
    try:
        b = Subjects("b")
        await nc.subscribe(b.orders)
        await nc.subscribe("_INBOX_b.>")
        await nc.subscribe(f"{Subjects('a').orders.rsplit('.', 2)[0]}.*.orders")
        await nc.subscribe(b.logs)  # B's log requests (and so B's slices' output)
        await nc.publish(Subjects("a").logs, b"forged")  # only the hub asks for output
        await nc.publish(b.heartbeat, b"forged")
        await nc.publish(b.status, b"forged")
        await nc.publish(b.orders, b"forged")
        await nc.publish(Subjects("a").orders, b"forged")
        await nc.flush()
        await until(lambda: len(errors) >= 9, "nine permission errors")
        text = "\n".join(errors)
        for what in (
            f'subscription to "{b.orders}"',
            'subscription to "_inbox_b.>"',
            f'publish to "{b.heartbeat}"',
            f'publish to "{b.status}"',
            f'publish to "{b.orders}"',
            f'publish to "{Subjects("a").orders}"',
            f'subscription to "{b.logs}"',
            f'publish to "{Subjects("a").logs}"',
        ):
            assert f"permissions violation for {what}".lower() in text.lower(), text

        # A's own report subject works: the hub answers A's heartbeat, but refuses a region
        # other than the one bound when A enrolled.
        hb = Heartbeat(
            sender="spoke/a",
            seq=1,
            cluster="a",
            incarnation="attacker",
            labels={"region": "eu-west-1"},
            lease_s=2.0,
            nodes=[NodeReport(name="a-node", gpu_type="H100", gpus=64, free=list(range(64)))],
        )
        reply = await nc.request(Subjects("a").heartbeat, encode(hb), timeout=5)
        ack = decode(reply.data, HeartbeatAck)
        assert not ack.accepted
        assert ack.reason is not None and "region" in ack.reason and "a-1" in ack.reason
    finally:
        await nc.close()
    with fed.client() as c:
        audit = c.audit()
        clusters = {x.name: x for x in c.clusters()}
    assert any("heartbeat refused" in a["detail"] and "region" in a["detail"] for a in audit), (
        audit[:5]
    )
    assert clusters["a"].labels["region"] == "a-1"  # the claim changed nothing


def test_spoke_join_spends_its_token_once_and_keeps_its_enrolled_labels(  # type: ignore[no-untyped-def]
    federation, tmp_path: Path
) -> None:
    fed: Federation = federation(spokes("a"))
    assert fed.api_url is not None
    admin = ["--hub", fed.api_url, "--token", fed.admin_token]
    made = cli("cluster", "token", "create", "c", "--labels", "region=eu-west-1", *admin)
    token = made.stdout.strip()
    assert token.startswith("orrery-join.") and token not in made.stderr
    inv = tmp_path / "c.yaml"
    inv.write_text("nodes: [{name: c-node, gpuType: H100, gpus: 2}]\n")
    state = tmp_path / "c-state"
    assert fed.api_url is not None and fed.nats is not None
    args = [
        sys.executable, "-m", "orrery_spoke_agent", "--cluster", "c",
        "--region", "us-east-1",  # not what the admin bound: ignored
        "--inventory", str(inv), "--state", str(state),
        "--heartbeat-interval", "0.25", "--lease", "2", "--kill-grace", "0.5",
        "--allow-root-slices", "--join", fed.api_url, "--token", token,
    ]  # fmt: skip
    log = open(tmp_path / "c.log", "wb")  # noqa: SIM115
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        fed.wait_ready(timeout=30, names=["c"])
        with fed.client() as c:
            cluster = {x.name: x for x in c.clusters()}["c"]
        assert cluster.labels == {"region": "eu-west-1"}
        assert (state / "identity" / "cluster.key").stat().st_mode & 0o077 == 0
        # The token is spent: a second enrollment with it is refused, naming why.
        again = subprocess.run(
            [*args[:-4], "--state", str(tmp_path / "other"), "--join", fed.api_url,
             "--token", token],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert again.returncode == 2
        assert "already used" in again.stderr and "Traceback" not in again.stderr
        assert token not in again.stderr
        listed = cli("cluster", "list", *admin).stdout
        assert "c" in listed and "Approved" in listed and "region=eu-west-1" in listed
        enrolled = json.loads(cli("cluster", "list", "-o", "json", *admin).stdout)["items"]
        assert {e["cluster"]: e["labels"] for e in enrolled}["c"]["region"] == "eu-west-1"
    finally:
        p.terminate()
        p.wait(10)
        log.close()


async def test_a_revoked_cluster_is_dropped_at_once_and_its_slice_moves(  # type: ignore[no-untyped-def]
    federation, tmp_path: Path
) -> None:
    fed: Federation = federation(spokes("a", "b"))
    out = tmp_path / "out"
    with fed.client() as c:
        # Long enough (20 s) that it cannot finish on the victim before the revocation, even
        # on a loaded machine where the `orrery cluster revoke` process takes seconds to start;
        # checkpoints every 5 steps keep the moved run short.
        job = c.submit(
            manifest("moving", out, slices=1, args=["--steps", "200", "--step-time", "0.1"])
        )
        j = wait_for(c, job.id, lambda j: j.status.phase == "Running", 30, "Running")
        victim = j.status.slices[0].cluster
        assert victim is not None
        other = "b" if victim == "a" else "a"
        # A client with the victim's certificate, connected before the revocation.
        nc, _ = await connect_as(fed, victim)
        assert fed.api_url is not None
        revoked = cli("cluster", "revoke", victim, "--hub", fed.api_url, "--token", fed.admin_token)
        assert "Revoked" in revoked.stdout
        await until(lambda: not nc.is_connected, "nats-server to drop the revoked cluster", 5)
        # ... and it cannot come back.
        with pytest.raises(Exception):  # noqa: B017 (nats-py: an authorization error)
            await connect_as(fed, victim)
        done = final(c, job.id, timeout=90)
        audit = c.audit()
    assert done.status.phase == "Succeeded", done.status.reason
    assert done.status.slices[0].cluster == other
    assert any(a["decision"] == "revoked" for a in audit)


def test_certificates_renew_before_they_expire_without_a_restart(  # type: ignore[no-untyped-def]
    federation,
) -> None:
    # 12 s certificates: renewed at 20% left (~2.4 s before expiry), over NATS.
    fed: Federation = federation(spokes("a"), hub_args=["--cert-ttl", "12s"])
    ident = SpokeIdentity.under(fed.state / "spokes" / "a")
    first = ident.validity()
    pid = fed.spokes["a"].pid
    deadline = time.monotonic() + 30
    while ident.validity() == first:
        assert time.monotonic() < deadline, "the certificate was not renewed"
        time.sleep(0.2)
    assert ident.validity()[1] > first[1]
    # Past the first certificate's expiry, a new connection (nats-server restarted) still
    # gets in: the agent loaded the renewed certificate into its live TLS context.
    while time.time() < first[1] + 1:
        time.sleep(0.2)
    assert fed.nats is not None
    fed.nats.kill()
    fed.nats.start()
    with fed.client() as c:
        before = {x.name: x for x in c.clusters()}["a"].last_heartbeat
        deadline = time.monotonic() + 20
        while {x.name: x for x in c.clusters()}["a"].last_heartbeat == before:
            assert time.monotonic() < deadline, "the spoke did not come back after the restart"
            time.sleep(0.2)
        audit = c.audit()
    assert fed.spokes["a"].pid == pid and fed.spokes["a"].poll() is None  # never restarted
    assert any(a["decision"] == "renewed" for a in audit)
