"""Fuzz the wire decoders: random bytes, random JSON, and well-formed messages carrying
absurd values (2**70 epochs, nan, 10,000-character strings, deep nesting). Decoding raises
nothing but WireError, and whatever decodes fits the declared limits."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orrery.wire import WireError, decode, decode_order
from orrery.wire.codec import decode_any
from orrery.wire.messages import (
    INT64_MAX,
    Assignment,
    Heartbeat,
    HeartbeatAck,
    Kill,
    SliceStatus,
    clip,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KINDS = {
    "heartbeat": Heartbeat,
    "heartbeat_ack": HeartbeatAck,
    "slice_status": SliceStatus,
    "assignment": Assignment,
    "kill": Kill,
}

absurd_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**63, 2**63 - 1, -(2**63) - 1, 2**70, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["x" * 5000, "\n", "../../etc/cron.d", "Running", "a\x00b"]),
)
json_values = st.recursive(
    absurd_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)


def _sample(kind: str) -> dict[str, Any]:
    base: dict[str, Any] = {"v": 1, "kind": kind, "sender": "s", "seq": 1}
    extra: dict[str, dict[str, Any]] = {
        "heartbeat": {"cluster": "c", "incarnation": "i", "lease_s": 1.0, "slices": []},
        "heartbeat_ack": {"forget": []},
        "slice_status": {
            "cluster": "c",
            "incarnation": "i",
            "slice": {"job": "j", "index": 0, "epoch": 0, "phase": "Running"},
        },
        "assignment": {
            "job": "j",
            "job_name": "j",
            "index": 0,
            "epoch": 0,
            "world_size": 1,
            "node": "n",
            "master_addr": "a",
            "master_port": 1,
            "command": ["x"],
            "checkpoint_dir": "/c",
        },
        "kill": {"job": "j", "index": 0, "epoch": 0},
    }
    return {**base, **extra[kind]}


def _decoders(data: bytes) -> None:
    for fn in (decode_any, decode_order, *(lambda d, m=m: decode(d, m) for m in KINDS.values())):
        try:
            fn(data)
        except WireError:
            pass


@FAST
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_wire_error(data: bytes) -> None:
    _decoders(data)


@FAST
@given(json_values)
def test_random_json_raises_only_wire_error(value: Any) -> None:
    _decoders(json.dumps(value).encode())


@FAST
@given(st.sampled_from(sorted(KINDS)), st.data())
def test_absurd_fields_in_well_formed_messages(kind: str, data: st.DataObject) -> None:
    msg = _sample(kind)
    paths = [k for k in msg if k not in ("v", "kind")]
    field = data.draw(st.sampled_from(paths))
    msg[field] = data.draw(json_values)
    if kind == "slice_status" and isinstance(msg["slice"], dict) and data.draw(st.booleans()):
        msg["slice"] = {
            **msg["slice"],
            data.draw(
                st.sampled_from(["epoch", "index", "exit_code", "reason", "started_at"])
            ): data.draw(json_values),
        }
    raw = json.dumps(msg).encode()
    try:
        m = decode(raw, KINDS[kind])
    except WireError:
        return
    # Whatever decodes fits the limits the store and the wire rely on.
    dumped = json.loads(m.model_dump_json())
    _assert_bounded(dumped)


def _assert_bounded(value: Any) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        assert -INT64_MAX - 1 <= value <= INT64_MAX
    elif isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, str):
        assert len(value) <= 8192
    elif isinstance(value, list):
        for v in value:
            _assert_bounded(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            _assert_bounded(k)
            _assert_bounded(v)


def test_epochs_past_int64_are_refused_at_decode() -> None:
    msg = _sample("kill")
    msg["epoch"] = 2**70
    with pytest.raises(WireError, match="epoch"):
        decode_order(json.dumps(msg).encode())
    msg["epoch"] = int("9" * 2100)
    with pytest.raises(WireError) as exc:
        decode_order(json.dumps(msg).encode())
    assert len(str(exc.value)) < 2048


def test_deeply_nested_json_is_a_wire_error() -> None:
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        try:
            decode_any(raw)
        except WireError:
            continue
        raise AssertionError("decoded")


@given(st.text(max_size=5000), st.integers(min_value=4, max_value=3000))
@settings(max_examples=60, deadline=None)
def test_clip_bounds_reasons(text: str, limit: int) -> None:
    out = clip(text, limit)
    assert len(out) <= limit
    assert out == text or out.endswith("...")
