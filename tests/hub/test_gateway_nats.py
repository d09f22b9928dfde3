"""The gateway <-> hub sync over NATS request/reply against a real hub and nats-server.

- insecure (plain NATS): a gateway enrolls, syncs over NATS, its load reaches the
  controller and the routes come back; a malformed, oversized or misnamed report is
  refused with a reason and a log line, and the hub keeps answering;
- secure (the hub's own TLS nats-server): each gateway gets a certificate for
  ``gateway-<id>`` (key 0600); with it a client cannot publish on another gateway's subject,
  read another's inbox or the hub's subscriptions; a client without a certificate is
  refused; a revoked gateway is dropped and cannot reconnect, while the others sync on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from orrery.service_resources import (
    MAX_SYNC_BYTES,
    GatewayReport,
    GatewayRoutes,
    ServiceLoad,
)
from orrery.wire.subjects import gateway_sync
from orrery_hub.config.settings import HubSettings
from orrery_hub.gateway.hublink import HubError, HubLink
from orrery_hub.main import Hub
from tests.conftest import ADMIN, ADMIN_TOKEN, FAST, running_hub
from tests.natsclients import connect_watched, refused

SVC = """
apiVersion: orrery/v1
kind: InferenceService
metadata: {name: chat, labels: {team: a}}
spec:
  replicas: {min: 1, max: 2}
  command: [python, serve.py]
"""


def report(gateway: str, services: list[ServiceLoad] | None = None) -> bytes:
    r = GatewayReport(gateway=gateway, interval_s=0.5, services=services or [])
    return r.model_dump_json(by_alias=True).encode()


async def until(pred: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def api(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as c:
        yield c


async def test_a_gateway_syncs_over_nats_and_its_load_reaches_the_controller(
    hub: Hub, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    r = await api.post("/v1/services", content=SVC, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    await until(lambda: "chat" in hub.serving.state, "the controller to know chat")
    link = HubLink(api, "g1", tmp_path / "g1")
    try:
        load = ServiceLoad(name="chat", concurrency=3.0, requests=7)
        routes = GatewayRoutes.model_validate_json(await link.exchange(report("g1", [load])))
        assert link.mode == "nats" and link.nc is not None
        assert [s.name for s in routes.services] == ["chat"]
        assert routes.services[0].readiness_path == "/healthz"
        assert hub.serving.state["chat"].gateways["g1"][2].concurrency == 3.0
        # Insecure hub: plain NATS, so nothing was written to the state folder.
        assert not (tmp_path / "g1" / "gateway.key").exists()
    finally:
        await link.close()


async def test_malformed_reports_are_refused_with_a_reason_and_the_hub_keeps_serving(
    hub: Hub, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert hub.nats_url is not None
    nc = await nats.connect(hub.nats_url)
    subject = gateway_sync("g1")
    try:
        bad: list[tuple[bytes, str]] = [
            (b"not json at all", "not a GatewayReport"),
            (b'{"gateway": "g1", "intervalS": -1}', "intervalS"),
            (b'{"gateway": "g1", "intervalS": 1, "extra": 1}', "extra"),
            (report("g2"), "names gateway 'g2'"),  # another gateway's name on g1's subject
            (b" " * (MAX_SYNC_BYTES + 1), "exceeds"),
        ]
        with caplog.at_level(logging.WARNING, logger="orrery.hub.gateway"):
            for body, why in bad:
                msg = await nc.request(subject, body, timeout=10)
                error = json.loads(msg.data)["error"]
                assert why in error, (why, error)
        refusals = [
            r for r in caplog.records if r.getMessage().startswith("gateway sync refused: ")
        ]
        assert len(refusals) == len(bad)
        # The hub still answers a good report, over NATS and over the REST fallback.
        msg = await nc.request(subject, report("g1"), timeout=10)
        assert GatewayRoutes.model_validate_json(msg.data).services == []
        r = await api.post(
            "/v1/gateway/sync", content=report("g1"), headers={"content-type": "application/json"}
        )
        assert r.status_code == 200
    finally:
        await nc.close()
    # A gateway told "error" raises HubError, which its sync loop logs and survives.
    link = HubLink(api, "g1", None)
    try:
        with pytest.raises(HubError, match="names gateway 'g3'"):
            await link.exchange(report("g3"))
    finally:
        await link.close()


# ---- secure mode ---------------------------------------------------------------------------


@pytest.fixture
async def secure_hub(tmp_path: Path) -> AsyncIterator[Hub]:
    settings = HubSettings(
        state_dir=tmp_path / "hub",
        nats_url=None,  # the hub starts its own nats-server: TLS, a user per identity
        port=0,
        timing=FAST,
        admin_token=ADMIN_TOKEN,
    )
    async with running_hub(settings) as h:
        yield h


async def connect_with(folder: Path, url: str, inbox: str) -> tuple[Any, list[str]]:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(folder / "ca.crt"))
    ctx.load_cert_chain(str(folder / "gateway.crt"), str(folder / "gateway.key"))
    return await connect_watched(url, ctx, inbox)


async def test_secure_each_gateway_is_confined_to_its_subject_and_revocation_drops_it(
    secure_hub: Hub, tmp_path: Path
) -> None:
    hub = secure_hub
    assert hub.endpoints is not None and hub.nats_url is not None
    url = hub.nats_url
    assert url.startswith("tls://")
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as api:
        a, b = HubLink(api, "a", tmp_path / "a"), HubLink(api, "b", tmp_path / "b")
        try:
            for link in (a, b):
                routes = GatewayRoutes.model_validate_json(
                    await link.exchange(report(link.gateway))
                )
                assert link.mode == "nats" and routes.services == []
            key = tmp_path / "a" / "gateway.key"
            assert key.stat().st_mode & 0o777 == 0o600

            # No certificate (TLS, or not even that): refused.
            anon = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(tmp_path / "a" / "ca.crt")
            )
            assert await refused(url, anon)
            assert await refused(url.replace("tls://", "nats://"), None)

            # A's certificate: its own subject works, another gateway's does not.
            nc, errors = await connect_with(tmp_path / "a", url, "_INBOX_gateway-a")
            try:
                msg = await nc.request(gateway_sync("a"), report("a"), timeout=10)
                assert GatewayRoutes.model_validate_json(msg.data).services == []
                await nc.publish(gateway_sync("b"), report("b"))
                await nc.subscribe("_INBOX_gateway-b.>")
                await nc.subscribe("orrery.v1.gateway.*.sync")
                await nc.publish("orrery.v1.cluster.x.report.heartbeat", b"forged")
                await nc.flush()
                await until(lambda: len(errors) >= 4, "four permission errors")
                text = "\n".join(errors).lower()
                for what in (
                    f'publish to "{gateway_sync("b")}"',
                    'subscription to "_inbox_gateway-b.>"',
                    'subscription to "orrery.v1.gateway.*.sync"',
                    'publish to "orrery.v1.cluster.x.report.heartbeat"',
                ):
                    assert f"permissions violation for {what}" in text, text

                # Revoked: nats-server drops A at the reload, and A cannot come back.
                r = await api.post("/v1/gateways/a:revoke")
                assert r.status_code == 204, r.text
                await until(lambda: nc.is_closed, "A's connection to be closed")
            finally:
                await nc.close()
            with pytest.raises(Exception):  # noqa: B017 (an auth error: its type varies)
                await connect_with(tmp_path / "a", url, "_INBOX_gateway-a")
            # B, untouched, syncs on.
            routes = GatewayRoutes.model_validate_json(await b.exchange(report("b")))
            assert routes.services == []
            assert (await api.post("/v1/gateways/zz:revoke")).status_code == 404
        finally:
            await a.close()
            await b.close()


def test_a_gateway_id_is_one_subject_token() -> None:
    import typer
    from typer.testing import CliRunner

    from orrery.names import is_dns_label
    from orrery_hub.gateway.cli import command, default_name

    assert is_dns_label(default_name())
    app = typer.Typer()
    command(app)
    app.command("other")(lambda: None)  # two commands: typer keeps the "gateway" name
    r = CliRunner().invoke(app, ["gateway", "--name", "host:1234"])
    assert r.exit_code == 2 and "--name 'host:1234'" in r.output
