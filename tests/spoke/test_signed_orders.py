"""The agent with a pinned hub key: forged, replayed, expired and unsigned orders never start
a slice, and are counted per reason and logged with the job, slice and epoch; garbage, huge
and absurd messages on its orders subject never stop it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.msg import Msg

from orrery.errors import InvalidInput
from orrery.natsserver import NatsServer
from orrery.wire import Assignment, Kill, SlicePhase, encode
from orrery.wire.signing import public_key_pem, sign
from orrery_spoke_agent.agent import Agent
from orrery_spoke_agent.executor.fake import FakeExecutor
from orrery_spoke_agent.inventory import Node
from orrery_spoke_agent.orders import load_verifier
from orrery_spoke_agent.settings import SpokeSettings
from tests.spoke.test_agent import ScriptedHub, assign

HUB_KEY = Ed25519PrivateKey.generate()
_seq = iter(range(1_000_000, 2_000_000))


def signed(o: Assignment | Kill, key: Ed25519PrivateKey = HUB_KEY, ttl: float = 30.0) -> bytes:
    stamped = o.model_copy(update={"seq": next(_seq), "expires_at": time.time() + ttl})
    return encode(sign(stamped, key))


def settings_for(url: str, tmp_path: Path, *, key: Path | None, insecure: bool) -> SpokeSettings:
    return SpokeSettings(
        nats_url=url,
        cluster=f"c-{uuid.uuid4().hex[:6]}",
        state_dir=tmp_path,
        heartbeat_interval_s=0.05,
        # Long: under load a starved loop must not lapse the lease (these tests are not
        # about it), which would stop the probe slice and ignore the next orders.
        lease_s=60.0,
        kill_grace_s=0.1,
        insecure=insecure,
        hub_key_file=key,
    )


@contextlib.asynccontextmanager
async def pinned_agent(
    nats_server: NatsServer, tmp_path: Path, cluster: str | None = None
) -> AsyncIterator[tuple[ScriptedHub, Agent, FakeExecutor]]:
    key_file = tmp_path / "hub-orders.pub"
    key_file.write_bytes(public_key_pem(HUB_KEY.public_key()))
    # insecure only for the plain test NATS: with a key configured, orders are verified.
    settings = settings_for(nats_server.url, tmp_path, key=key_file, insecure=True)
    if cluster is not None:
        settings = dataclasses.replace(settings, cluster=cluster)
    nc = await nats.connect(nats_server.url)
    hub = ScriptedHub(nc, settings.cluster)
    await nc.subscribe(f"orrery.v1.cluster.{settings.cluster}.report.*", cb=hub.on_report)
    ex = FakeExecutor()
    agent = Agent(settings, ex, [Node("n0", "H100", 8, 81920)])
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.heartbeat_ok.wait(), 60)
        yield hub, agent, ex
        assert not task.done(), "the agent stopped"
    finally:
        agent.shutdown()
        await asyncio.wait_for(task, 60)
        await nc.close()


async def send(hub: ScriptedHub, data: bytes) -> None:
    await hub.nc.publish(hub.subjects.orders, data)
    await hub.nc.flush()


async def probe(hub: ScriptedHub, ex: FakeExecutor, job: str) -> None:
    """A good order after the bad ones: once it runs, every earlier one was handled."""
    await send(hub, signed(assign(job=job, gpus=[7])))
    await hub.until(lambda: job in [a.job for a in ex.launched], f"probe {job} launched")


async def test_forged_replayed_expired_and_unsigned_orders_never_start_a_slice(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="orrery.spoke")
    async with pinned_agent(nats_server, tmp_path) as (hub, agent, ex):
        # Forged: signed by a key that is not the hub's, or the hub's order with a field changed.
        await send(hub, signed(assign(job="forged"), key=Ed25519PrivateKey.generate()))
        tampered = json.loads(signed(assign(job="tampered")))
        tampered["command"] = ["sh", "-c", "id"]
        await send(hub, json.dumps(tampered).encode())
        # Expired, and unsigned (what a client with no key, or an N-1 hub, sends).
        await send(hub, signed(assign(job="late"), ttl=-60))
        await send(hub, encode(assign(job="unsigned")))
        # The real one runs and finishes; once the hub has forgotten it, the same bytes
        # replayed would run it again — they must be refused.
        real = signed(assign(job="real"))
        await send(hub, real)
        await hub.until(lambda: [a.job for a in ex.launched] == ["real"], "real launched")
        key = ex.launched[0].key
        ex.finish(key, 0)
        await hub.until(
            lambda: hub.last_slices().get(("real", 0, 1)) == SlicePhase.SUCCEEDED, "Succeeded"
        )
        hub.forget = [key]
        await hub.until(lambda: ("real", 0, 1) not in hub.last_slices(), "forgotten")
        await send(hub, real)
        # A replayed kill is refused too (a kill fences the slice's epochs forever).
        kill = signed(Kill(sender="hub", seq=0, job="other", index=0, epoch=1))
        await send(hub, kill)
        await send(hub, kill)
        await probe(hub, ex, "probe")

        assert [a.job for a in ex.launched] == ["real", "probe"]
        assert dict(agent.orders.refused) == {
            "forged": 2,
            "expired": 1,
            "unsigned": 1,
            "replayed": 2,
        }
        assert not any(s.slice.job in ("forged", "tampered", "late") for s in hub.statuses)
        forged = [r for r in caplog.records if getattr(r, "reason", None) == "forged"]
        assert {getattr(r, "job", None) for r in forged} == {"forged", "tampered"}
        assert all(
            getattr(r, "slice", None) == 0
            and getattr(r, "epoch", None) == 1
            and getattr(r, "cluster", None) == agent.settings.cluster
            for r in forged
        )


async def test_garbage_huge_and_absurd_orders_never_stop_the_agent(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with pinned_agent(nats_server, tmp_path) as (hub, agent, ex):
        agent.orders.max_bytes = 128 * 1024  # the test NATS carries at most 1 MiB
        garbage = [
            b"",
            b"\x00\xff" * 1000,
            b"{",
            b"null",
            b"[]",
            b'"assignment"',
            b"[" * 50_000 + b"]" * 50_000,  # deeper than any parser's recursion
            b'{"kind": "assignment", "v": 1, "sender": "hub", "seq": -1}',
            b'{"kind": "kill", "v": 99, "sender": "hub", "seq": 1, "job": "j", "index": 0}',
            b'{"kind": "kill", "v": 1, "sender": "hub", "seq": 1, "job": "j", "index": 0, '
            b'"epoch": 1, "expires_at": "NaN"}',
            b'{"kind": "kill", "v": 1, "sender": "hub", "seq": 1, "job": "j", "index": 0, '
            b'"epoch": 1e999}',
        ]
        for junk in garbage:
            await send(hub, junk)
        # Huge: past the limit (dropped unread), and within it but unsigned.
        await send(hub, b'{"kind": "assignment", "x": "' + b"a" * (200 * 1024) + b'"}')
        big = assign(job="big").model_copy(update={"env": {"PAD": "x" * (100 * 1024)}})
        await send(hub, encode(big))
        # Absurd but valid, unsigned: refused before anything looks at it.
        await send(hub, encode(assign(job="absurd", epoch=2**62, gpus=[63])))
        # Absurd but valid and signed (a buggy hub): handled as orders, refused for fit.
        beats = len(hub.heartbeats)
        await send(hub, signed(assign(job="nonode").model_copy(update={"node": "nope"})))
        await send(hub, signed(assign(job="nogpu", gpus=[63])))
        await send(hub, signed(Kill(sender="hub", seq=0, job="ghost", index=7, epoch=2**62)))
        await probe(hub, ex, "alive")

        assert [a.job for a in ex.launched] == ["alive"]
        refused = agent.orders.refused
        assert refused["malformed"] == len(garbage)
        assert refused["oversized"] == 1
        assert refused["unsigned"] == 2
        await hub.until(
            lambda: (
                {("nonode", 0, 1), ("nogpu", 0, 1), ("ghost", 7, 2**62)} <= set(hub.last_slices())
            ),
            "the refusals reported",
        )
        await hub.until(lambda: len(hub.heartbeats) > beats + 5, "heartbeats go on")

        # Garbage answers to its heartbeats: counted, and it keeps asking.
        async def garbage_reply(msg: Msg) -> None:
            await msg.respond(b'{"kind": "heartbeat_ack", "accepted": "maybe"}')

        hub.answer = False
        sub = await hub.nc.subscribe(hub.subjects.heartbeat, cb=garbage_reply)
        await hub.until(lambda: agent.orders.refused["bad_reply"] >= 3, "bad replies counted")
        await sub.unsubscribe()
        hub.answer = True
        beats = len(hub.heartbeats)
        await hub.until(lambda: len(hub.heartbeats) > beats + 3, "heartbeats go on")


async def test_an_order_accepted_before_a_restart_is_refused_after_it(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    real = signed(assign(job="before"))
    async with pinned_agent(nats_server, tmp_path) as (hub, agent, ex):
        cluster = agent.settings.cluster
        await send(hub, real)
        await hub.until(lambda: [a.job for a in ex.launched] == ["before"], "launched")
    # The same state folder, a new process: its replay cache is empty, its horizon is not.
    async with pinned_agent(nats_server, tmp_path, cluster) as (hub, agent, ex):
        await send(hub, real)
        await probe(hub, ex, "after")
        assert [a.job for a in ex.launched] == ["after"]
        assert dict(agent.orders.refused) == {"replayed": 1}


def test_a_secure_spoke_without_a_pinned_key_refuses_to_start(tmp_path: Path) -> None:
    s = settings_for("nats://127.0.0.1:4222", tmp_path, key=None, insecure=False)
    with pytest.raises(InvalidInput, match="--hub-key"):
        load_verifier(s, time.time)
    # Insecure and no key: development mode, orders accepted unsigned.
    s = settings_for("nats://127.0.0.1:4222", tmp_path, key=None, insecure=True)
    assert load_verifier(s, time.time) is None
    # The key enrollment stores is found without --hub-key.
    enrolled = tmp_path / "identity" / "hub-orders.pub"
    enrolled.parent.mkdir()
    enrolled.write_bytes(public_key_pem(HUB_KEY.public_key()))
    s = settings_for("nats://127.0.0.1:4222", tmp_path, key=None, insecure=False)
    assert load_verifier(s, time.time) is not None


def test_an_unreadable_or_wrong_key_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "k.pub"
    bad.write_text("not a key")
    for path, words in ((bad, "not an Ed25519"), (tmp_path / "missing.pub", "cannot read")):
        s = settings_for("nats://127.0.0.1:4222", tmp_path, key=path, insecure=False)
        with pytest.raises(InvalidInput, match=words):
            load_verifier(s, time.time)
