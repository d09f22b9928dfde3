"""Signed orders: what the hub signs, what a spoke accepts, and what it refuses (forged,
replayed, expired, unsigned) — with a golden signed order, so a change to the canonical
bytes (which would make every spoke refuse every order) cannot slip in unnoticed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orrery.wire import Assignment, Kill, decode_order, encode
from orrery.wire.signing import (
    OrderVerifier,
    Verdict,
    canonical_bytes,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    sign,
)

GOLDEN = Path(__file__).parent / "golden"
# A fixed key, so the golden signature is reproducible. Test-only, obviously.
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
NOW = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def order(seq: int = 11, expires_at: float | None = NOW + 5, **kw: object) -> Assignment:
    fields: dict[str, object] = {
        "sender": "hub",
        "seq": seq,
        "expires_at": expires_at,
        "job": "train-1a2b3c",
        "job_name": "train",
        "index": 0,
        "epoch": 2,
        "world_size": 2,
        "node": "n0",
        "gpus": [0, 1, 2, 3],
        "master_addr": "10.0.0.5",
        "master_port": 29500,
        "command": ["python", "train.py"],
        "env": {"EPOCHS": "3"},
        "checkpoint_dir": "/ckpt",
        "checkpoint": "/ckpt/9.pt",
        "max_runtime_s": 3600.0,
    }
    return Assignment.model_validate(fields | kw)


def verifier(
    clock: Clock | None = None, max_skew_s: float = 10.0, max_entries: int = 100_000
) -> OrderVerifier:
    return OrderVerifier(KEY.public_key(), clock or Clock(), max_skew_s, max_entries=max_entries)


def test_golden_signed_order_decodes_and_verifies() -> None:
    path = GOLDEN / "assignment_signed.json"
    signed = sign(order(), KEY)
    if os.environ.get("ORRERY_REGEN_GOLDEN"):
        path.write_text(json.dumps(json.loads(encode(signed)), indent=2, sort_keys=True) + "\n")
    on_disk = decode_order(path.read_bytes())
    assert on_disk == signed  # Ed25519 is deterministic: same key, same bytes, same sig
    assert verifier().check(on_disk) is Verdict.OK


def test_signed_orders_survive_the_wire_and_verify() -> None:
    v = verifier()
    kill = Kill(sender="hub", seq=2, job="j", index=0, epoch=1, expires_at=NOW + 5)
    for o in (sign(order(seq=1), KEY), sign(kill, KEY)):
        assert v.check(decode_order(encode(o))) is Verdict.OK


def test_canonical_bytes_ignore_sig_key_order_and_spacing() -> None:
    signed = sign(order(), KEY)
    assert canonical_bytes(signed) == canonical_bytes(order())
    reordered = json.dumps(dict(reversed(list(json.loads(encode(signed)).items()))), indent=4)
    assert verifier().check(decode_order(reordered.encode())) is Verdict.OK


def test_a_signature_by_another_key_is_forged() -> None:
    stranger = Ed25519PrivateKey.generate()
    assert verifier().check(sign(order(), stranger)) is Verdict.FORGED


@pytest.mark.parametrize(
    "change",
    [
        {"command": ["sh", "-c", "id"]},
        {"env": {"EPOCHS": "3", "WANDB_API_KEY": "x"}},
        {"epoch": 3},
        {"seq": 12},
        {"expires_at": NOW + 3600},
        {"master_addr": "10.6.6.6"},
        {"sender": "hub2"},
    ],
)
def test_a_tampered_field_is_forged(change: dict[str, object]) -> None:
    signed = sign(order(), KEY)
    tampered = json.loads(encode(signed))
    if "expires_at" in change:  # the expiry travels in front of the signature
        tampered["sig"] = f"{change.pop('expires_at')!r}:" + tampered["sig"].partition(":")[2]
    tampered |= change
    assert verifier().check(decode_order(json.dumps(tampered).encode())) is Verdict.FORGED


@pytest.mark.parametrize("sig", ["", "not base64!", "QUJD", "A" * 88])
def test_a_garbage_signature_is_forged(sig: str) -> None:
    assert verifier().check(order().model_copy(update={"sig": sig})) is Verdict.FORGED


def test_the_same_order_twice_is_replayed() -> None:
    v = verifier()
    signed = sign(order(), KEY)
    assert v.check(signed) is Verdict.OK
    assert v.check(decode_order(encode(signed))) is Verdict.REPLAYED
    assert v.check(sign(order(seq=12), KEY)) is Verdict.OK  # a resend has a new seq


def test_an_order_past_its_expiry_is_expired_allowing_for_skew() -> None:
    clock = Clock()
    v = verifier(clock, max_skew_s=2.0)
    clock.t = NOW + 5 + 1.9
    assert v.check(sign(order(seq=1), KEY)) is Verdict.OK  # late, but within the skew
    clock.t = NOW + 5 + 2.1
    assert v.check(sign(order(seq=2), KEY)) is Verdict.EXPIRED


def test_an_expired_replay_stays_refused_after_the_cache_forgets_it() -> None:
    clock = Clock()
    v = verifier(clock, max_skew_s=1.0)
    signed = sign(order(), KEY)
    assert v.check(signed) is Verdict.OK
    clock.t = NOW + 100
    assert v.check(sign(order(seq=99, expires_at=NOW + 105), KEY)) is Verdict.OK
    assert len(v) == 1  # the first one was pruned once it expired...
    assert v.check(signed) is Verdict.EXPIRED  # ...and is refused all the same


@pytest.mark.parametrize(
    "o",
    [
        order(),  # no signature
        sign(order(expires_at=None), KEY),  # signed, but no expiry: an N-1 hub's shape
        Kill(sender="hub", seq=1, job="j", index=0, epoch=1),
    ],
)
def test_unsigned_or_unexpiring_orders_are_unsigned(o: Assignment | Kill) -> None:
    assert verifier().check(o) is Verdict.UNSIGNED


def test_the_replay_cache_is_bounded_and_errs_on_the_safe_side() -> None:
    v = verifier(max_entries=3)
    signed = [sign(order(seq=i, expires_at=NOW + i), KEY) for i in range(1, 6)]
    for s in signed:
        assert v.check(s) is Verdict.OK
    assert len(v) == 3
    # The two forgotten ones (soonest to expire) are still refused: the floor covers them.
    assert v.check(signed[0]) is Verdict.REPLAYED
    assert v.check(signed[1]) is Verdict.REPLAYED
    assert v.check(signed[4]) is Verdict.REPLAYED


def test_a_restarted_verifier_refuses_what_its_predecessor_accepted() -> None:
    first = verifier()
    old = [sign(order(seq=i, expires_at=NOW + i), KEY) for i in (1, 2)]
    for o in old:
        assert first.check(o) is Verdict.OK
    assert first.horizon == NOW + 2 + 10.0
    # A new process, empty cache, given the saved horizon as its floor.
    second = OrderVerifier(KEY.public_key(), Clock(), 10.0, floor=first.horizon)
    assert [second.check(o) for o in old] == [Verdict.REPLAYED, Verdict.REPLAYED]
    assert second.check(sign(order(seq=3, expires_at=NOW + 3), KEY)) is Verdict.OK


def test_n_minus_1_orders_without_expiry_still_decode() -> None:
    old = (GOLDEN / "assignment.json").read_bytes()
    assert b"expires_at" not in old
    decoded = decode_order(old)
    assert decoded.expires_at is None and decoded.sig is None


def test_keys_round_trip_as_pem() -> None:
    again = load_private_key(private_key_pem(KEY))
    pub = load_public_key(public_key_pem(KEY.public_key()))
    assert OrderVerifier(pub, Clock()).check(sign(order(), again)) is Verdict.OK
    with pytest.raises(ValueError):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")


# What a spoke one version behind knows of an order: the fields of round 1 (it forbids any
# other). A signed order from this hub must still decode there.
ROUND1_ASSIGNMENT_FIELDS = {
    "v",
    "kind",
    "sender",
    "seq",
    "sig",
    "job",
    "job_name",
    "index",
    "epoch",
    "world_size",
    "node",
    "gpus",
    "master_addr",
    "master_port",
    "command",
    "image",
    "env",
    "checkpoint_dir",
    "checkpoint",
    "max_runtime_s",
}
ROUND1_KILL_FIELDS = {
    "v",
    "kind",
    "sender",
    "seq",
    "sig",
    "job",
    "index",
    "epoch",
    "reason",
    "grace_s",
}


def test_a_signed_order_has_only_fields_a_spoke_one_version_behind_knows() -> None:
    a = json.loads(encode(sign(order(), KEY)))
    assert set(a) <= ROUND1_ASSIGNMENT_FIELDS, set(a) - ROUND1_ASSIGNMENT_FIELDS
    assert isinstance(a["sig"], str)  # round 1: ``sig: str | None``, unchecked
    k = Kill(sender="hub", seq=3, expires_at=NOW + 5, job="train-1a2b3c", index=0, epoch=2)
    k_wire = json.loads(encode(sign(k, KEY)))
    assert set(k_wire) <= ROUND1_KILL_FIELDS, set(k_wire) - ROUND1_KILL_FIELDS


@pytest.mark.parametrize("sig", ["nan:QUJD", "inf:QUJD", "soon:QUJD", "1e999:QUJD"])
def test_an_absurd_expiry_in_the_signature_is_refused_at_decode(sig: str) -> None:
    from orrery.wire import WireError

    data = json.loads(encode(order())) | {"sig": sig}
    with pytest.raises(WireError):
        decode_order(json.dumps(data).encode())
