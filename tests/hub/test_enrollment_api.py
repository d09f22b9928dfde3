"""A secure hub in process (its own nats-server, TLS, a user per enrolled cluster):
enrollment over the API with --require-approval, approval letting the cluster into NATS,
the one-line errors a bad join gets, and the permissions the routes need."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import nats
import pytest

from orrery.clusterid import SpokeIdentity, inbox_prefix
from orrery.errors import InvalidInput
from orrery.wire import Heartbeat, HeartbeatAck, Subjects, decode, encode
from orrery_hub.config.settings import HubSettings
from orrery_hub.main import Hub
from tests.conftest import ADMIN_TOKEN, FAST, running_hub

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def connects(url: str, ident: SpokeIdentity, cluster: str) -> bool:
    try:
        nc = await nats.connect(
            url,
            tls=ident.ssl_context(),
            inbox_prefix=inbox_prefix(cluster),
            allow_reconnect=False,
            connect_timeout=3,
        )
    except Exception:
        return False
    try:
        hb = Heartbeat(sender="x", seq=1, cluster=cluster, incarnation="t", lease_s=1.0)
        reply = await nc.request(Subjects(cluster).heartbeat, encode(hb), timeout=5)
        return decode(reply.data, HeartbeatAck).accepted
    finally:
        await nc.close()


async def test_a_cluster_waits_for_approval_then_gets_into_nats(tmp_path: Path) -> None:
    settings = HubSettings(
        state_dir=tmp_path / "hub", port=0, timing=FAST, admin_token=ADMIN_TOKEN,
        require_approval=True,
    )  # fmt: skip
    async with running_hub(settings) as hub:
        assert hub.endpoints is not None and hub.nats_url is not None
        assert hub.nats_url.startswith("tls://")
        api = hub.endpoints.api_url
        async with httpx.AsyncClient(base_url=api, timeout=10) as c:
            r = await c.post("/v1/clusters/tokens", json={"cluster": "eu", "labels": {}})
            assert r.status_code == 401  # no token
            r = await c.post(
                "/v1/clusters/tokens", json={"cluster": "eu", "ttl": "soon"}, headers=ADMIN
            )
            assert r.status_code == 422 and "ttl" in r.text
            r = await c.post(
                "/v1/clusters/tokens",
                json={"cluster": "eu", "labels": {"region": "eu-1"}},
                headers=ADMIN,
            )
            assert r.status_code == 201
            token = r.json()["token"]
            assert token not in (tmp_path / "hub").joinpath("hub.db").read_bytes().decode("latin-1")

        ident = SpokeIdentity.under(tmp_path / "eu")
        with pytest.raises(InvalidInput, match="is for cluster 'eu', not 'us'"):
            await asyncio.to_thread(SpokeIdentity.under(tmp_path / "us").join, api, token, "us")
        await asyncio.to_thread(ident.join, api, token, "eu")
        assert ident.info()["state"] == "Pending"
        assert ident.info()["labels"] == {"region": "eu-1"}
        assert not await connects(hub.nats_url, ident, "eu")  # no NATS user yet

        async with httpx.AsyncClient(base_url=api, timeout=10) as c:
            r = await c.post("/v1/clusters/eu:approve", headers=ADMIN)
            assert r.status_code == 200 and r.json()["state"] == "Approved"
            assert (await c.post("/v1/clusters/nope:approve", headers=ADMIN)).status_code == 404
        # nats-server reloads on SIGHUP, asynchronously: poll with a deadline.
        deadline = asyncio.get_running_loop().time() + 10
        while not await connects(hub.nats_url, ident, "eu"):
            assert asyncio.get_running_loop().time() < deadline, "approved, still refused"
            await asyncio.sleep(0.1)


async def test_identity_routes_refuse_an_insecure_hub_clearly(hub: Hub) -> None:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, timeout=10) as c:
        r = await c.post("/v1/clusters/tokens", json={"cluster": "eu"}, headers=ADMIN)
    assert r.status_code == 409 and "--insecure" in r.text


async def test_enrollment_over_https_pins_the_ca_by_hash(tmp_path: Path) -> None:
    """The hub serves its API over HTTPS with a certificate of its own CA; `token create`
    hands out the CA's hash; a spoke pinning another hash is refused before its token leaves
    (nothing written, the token still unspent), one pinning the right hash enrolls."""
    from orrery.certs import ca_hash, key_pem, write_public, write_secret
    from orrery_hub.identity import files

    paths = files.IdentityPaths.under(tmp_path / "hub")
    ca = files.ensure(paths)
    server, key = ca.issue_server(("127.0.0.1", "localhost"))
    write_secret(paths.root / "api.key", key_pem(key))
    write_public(paths.root / "api.crt", server.pem)
    settings = HubSettings(
        state_dir=tmp_path / "hub", port=0, timing=FAST, admin_token=ADMIN_TOKEN,
        tls_cert=paths.root / "api.crt", tls_key=paths.root / "api.key",
    )  # fmt: skip
    async with running_hub(settings) as hub:
        assert hub.endpoints is not None
        api = hub.endpoints.api_url
        assert api.startswith("https://")
        async with httpx.AsyncClient(
            base_url=api, timeout=10, verify=ssl.create_default_context(cafile=paths.ca_cert)
        ) as c:
            r = await c.post("/v1/clusters/tokens", json={"cluster": "eu"}, headers=ADMIN)
            assert r.status_code == 201
            token, pin = r.json()["token"], r.json()["caHash"]
        assert pin == ca_hash(paths.ca_cert.read_bytes())

        wrong = "sha256:" + "0" * 64
        ident = SpokeIdentity.under(tmp_path / "eu")
        with pytest.raises(InvalidInput, match=r"--ca-hash: the hub at .* presented CA sha256:"):
            await asyncio.to_thread(ident.join, api, token, "eu", ca_hash=wrong)
        assert not ident.root.exists() or not any(ident.root.iterdir())
        with pytest.raises(InvalidInput, match="--ca-hash: must read sha256:<64 hex digits>"):
            await asyncio.to_thread(ident.join, api, token, "eu", ca_hash="deadbeef")

        await asyncio.to_thread(
            ident.join, api, token, "eu", ca_hash=pin.upper().replace("SHA256", "sha256")
        )
        assert ident.exists() and ident.info()["cluster"] == "eu"
        assert ident.ca.read_bytes() == paths.ca_cert.read_bytes()
        assert hub.nats_url is not None
        deadline = asyncio.get_running_loop().time() + 10
        while not await connects(hub.nats_url, ident, "eu"):
            assert asyncio.get_running_loop().time() < deadline, "enrolled, still refused"
            await asyncio.sleep(0.1)
