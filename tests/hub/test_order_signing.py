"""The hub's side of signed orders: its key is made once and kept (0600), and every order it
publishes is signed, carries an expiry, and verifies against the ``orders.pub`` it wrote."""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from orrery.errors import InvalidInput
from orrery.wire import Kill, Subjects, decode_order
from orrery.wire.signing import OrderVerifier, Verdict, load_public_key, public_key_pem
from orrery_hub.identity.orderkey import load_or_create_order_key
from orrery_hub.main import Hub


def test_the_key_is_created_once_with_owner_only_access(tmp_path: Path) -> None:
    key = load_or_create_order_key(tmp_path)
    folder = tmp_path / "identity"
    assert stat.S_IMODE((folder / "orders.key").stat().st_mode) == 0o600
    assert (folder / "orders.pub").read_bytes() == public_key_pem(key.public_key())
    (folder / "orders.pub").unlink()  # a lost public half is written again, same key
    again = load_or_create_order_key(tmp_path)
    assert public_key_pem(again.public_key()) == public_key_pem(key.public_key())
    assert (folder / "orders.pub").exists()


def test_a_broken_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "identity").mkdir()
    (tmp_path / "identity" / "orders.key").write_text("garbage")
    with pytest.raises(InvalidInput, match=r"orders\.key is not an Ed25519"):
        load_or_create_order_key(tmp_path)


async def test_published_orders_are_signed_with_an_expiry(hub: Hub) -> None:
    pub = load_public_key((hub.settings.state_dir / "identity" / "orders.pub").read_bytes())
    verifier = OrderVerifier(pub, time.time)
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on(msg: Msg) -> None:
        await got.put(msg.data)

    nc = await nats.connect(hub.endpoints.nats_url if hub.endpoints else "")
    try:
        await nc.subscribe(Subjects("c-signed").orders, cb=on)
        await nc.flush()
        kill = Kill(sender="hub", seq=0, job="j", index=0, epoch=1)
        await hub._publish([("c-signed", kill), ("c-signed", kill)])
        first = decode_order(await asyncio.wait_for(got.get(), 5))
        second = decode_order(await asyncio.wait_for(got.get(), 5))
    finally:
        await nc.close()
    assert first.sig and first.expires_at is not None
    assert 0 < first.expires_at - time.time() <= hub.settings.order_ttl
    assert second.seq > first.seq  # a resend is a new order, not a replay
    assert verifier.check(first) is Verdict.OK
    assert verifier.check(second) is Verdict.OK
    # A hub restarted later never reuses a seq: it starts from the clock.
    assert first.seq > int((time.time() - 3600) * 1_000_000)
