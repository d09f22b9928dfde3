"""Signed orders end to end, real processes: a spoke agent that pinned the hub's key refuses
an order signed by another key, a real order with a field changed, and a real order
replayed — the slice is not started, and the spoke's log says why, naming the job.

Twice: on the development federation (plain NATS, ``--insecure``), where anyone can publish
on a spoke's orders subject; and on the secure one (TLS, per-cluster NATS users, the key
pinned at enrollment), by a client holding the hub's own NATS credentials but not its
signing key — exactly the attacker the signature must stop.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.msg import Msg

from e2e.conftest import manifest, spokes, steps
from orrery.clusterid import SpokeIdentity
from orrery.federation import Federation
from orrery.wire import Assignment, Heartbeat, Subjects, decode, decode_order, encode
from orrery.wire.signing import sign

pytestmark = pytest.mark.e2e


async def until(pred: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def refusals(fed: Federation, cluster: str) -> list[str]:
    log = fed.state / "logs" / f"spoke-{cluster}.log"
    return [ln for ln in log.read_text().splitlines() if "refused order:" in ln]


async def forged_and_replayed(
    fed: Federation, tmp_path: Path, sender: Any, spy: Any, watcher: Any
) -> None:
    """The attack: ``sender`` publishes on A's orders subject, ``spy`` reads it (to capture a
    real order), ``watcher`` reads A's heartbeats (to know when A forgot the ended slice)."""
    orders_subject = Subjects("a").orders
    seen: list[bytes] = []
    beats: list[Heartbeat] = []

    async def capture(msg: Msg) -> None:
        seen.append(msg.data)

    async def watch(msg: Msg) -> None:
        beats.append(decode(msg.data, Heartbeat))

    nc = sender
    try:
        await spy.subscribe(orders_subject, cb=capture)
        await watcher.subscribe(Subjects("a").heartbeat, cb=watch)
        await spy.flush()
        await watcher.flush()

        # 1. Signed, but not by the hub.
        pwned = tmp_path / "pwned"
        forged = Assignment(
            sender="hub",
            seq=int(time.time() * 1_000_000) + 10**9,
            expires_at=time.time() + 60,
            job="forged-000001",
            job_name="forged",
            index=0,
            epoch=1,
            world_size=1,
            node="a-node",  # a real node and free GPU: only the signature stops it
            gpus=[3],
            master_addr="127.0.0.1",
            master_port=29500,
            command=[sys.executable, "-c", f"open({str(pwned)!r}, 'w').write('ran')"],
            checkpoint_dir=str(tmp_path / "ck"),
        )
        await nc.publish(orders_subject, encode(sign(forged, Ed25519PrivateKey.generate())))
        await nc.flush()

        # 2. A real job: capture the hub's real assignment on the wire as it goes by.
        out = tmp_path / "out"
        with fed.client() as c:
            body = manifest("real", out, slices=1, gpus=1, args=["--steps", "3"])
            job = await asyncio.to_thread(c.submit, body)

            def real_orders() -> list[bytes]:
                return [d for d in seen if json.loads(d).get("job") == job.id]

            await until(lambda: bool(real_orders()), "the hub's assignment on the wire")
            real = real_orders()[0]
            assert decode_order(real).sig is not None
            # 3. The same bytes again at once (while it runs), and a changed copy of them.
            await nc.publish(orders_subject, real)
            tampered = json.loads(real)
            tampered["command"] = [sys.executable, "-c", f"open({str(pwned)!r}, 'w').write('x')"]
            await nc.publish(orders_subject, json.dumps(tampered).encode())
            await nc.flush()

            def phase() -> str:
                return c.job(job.id).status.phase

            await until(lambda: phase() in ("Succeeded", "Failed"), "the real job to end", 60)
            assert phase() == "Succeeded"
            # 4. Replayed after it ended, when the spoke no longer holds the attempt: without
            # the signature's replay cache / expiry this would run the job a second time.
            await until(lambda: len(refusals(fed, "a")) >= 3, "the first refusals logged")
            n = len(beats)
            await until(
                lambda: len(beats) > n and all(x.job != job.id for x in beats[-1].slices),
                "the spoke to forget the ended attempt",
            )
            await nc.publish(orders_subject, real)
            await nc.flush()
            await until(lambda: len(refusals(fed, "a")) >= 4, "the late replay refused")
            attempts = await asyncio.to_thread(c.attempts, job.id)
    finally:
        for conn in {id(c): c for c in (sender, spy, watcher)}.values():
            await conn.close()

    lines = refusals(fed, "a")
    forged_lines = [ln for ln in lines if "refused order: forged" in ln]
    assert any("job=forged-000001" in ln for ln in forged_lines), lines
    assert any(f"job={job.id}" in ln for ln in forged_lines), lines  # the tampered copy
    replays = [ln for ln in lines if f"job={job.id}" in ln and "forged" not in ln]
    assert len(replays) == 2, lines
    assert "refused order: replayed" in replays[0]
    # The late one is refused as replayed, or as expired if the hub's TTL has passed.
    assert "refused order: replayed" in replays[1] or "refused order: expired" in replays[1]
    for ln in forged_lines + replays:
        assert "cluster=a" in ln and "slice=0" in ln and "epoch=" in ln
    # Nothing forged ran, and the real slice ran exactly once.
    assert not pwned.exists()
    assert [r["step"] for r in steps(out) if "step" in r] == [0, 1, 2]
    assert [(a.index, a.epoch, a.phase) for a in attempts] == [(0, 1, "Succeeded")]
    started = [
        ln
        for ln in (fed.state / "logs" / "spoke-a.log").read_text().splitlines()
        if "slice started" in ln
    ]
    assert len(started) == 1 and f"job={job.id}" in started[0], started


async def test_forged_and_replayed_orders_are_refused_by_a_real_spoke_on_plain_nats(  # type: ignore[no-untyped-def]
    federation, tmp_path: Path
) -> None:
    """Development mode: anyone can publish on a spoke's orders subject; the spoke was given
    the hub's orders.pub, so only the signature stands in the way."""
    fed: Federation = federation(spokes("a"), insecure=True)
    assert fed.nats is not None
    assert (fed.state / "hub" / "identity" / "orders.pub").exists()
    nc = await nats.connect(fed.nats.url)
    await forged_and_replayed(fed, tmp_path, nc, nc, nc)


async def test_with_the_hubs_own_nats_credentials_forged_and_replayed_orders_are_refused(  # type: ignore[no-untyped-def]
    federation, tmp_path: Path
) -> None:
    """The secure federation: TLS, a NATS user per cluster, the key pinned at enrollment.
    The attacker holds the hub's NATS client certificate (the only one allowed to publish
    orders) but not its signing key, and spoke A's certificate to record A's orders."""
    fed: Federation = federation(spokes("a"))
    assert fed.nats is not None and fed.nats.url.startswith("tls://")
    hub_ident = fed.state / "hub" / "identity"
    pinned = fed.state / "spokes" / "a" / "identity" / "hub-orders.pub"
    assert pinned.read_bytes() == (hub_ident / "orders.pub").read_bytes()
    hub_tls = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(hub_ident / "ca.crt"))
    hub_tls.load_cert_chain(str(hub_ident / "hub-nats.crt"), str(hub_ident / "hub-nats.key"))
    as_hub = await nats.connect(fed.nats.url, tls=hub_tls, inbox_prefix="_INBOX_hub")
    as_a = await nats.connect(
        fed.nats.url,
        tls=SpokeIdentity.under(fed.state / "spokes" / "a").ssl_context(),
        inbox_prefix="_INBOX_a",
    )
    await forged_and_replayed(fed, tmp_path, as_hub, as_a, as_hub)
