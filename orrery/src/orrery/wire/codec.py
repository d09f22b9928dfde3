"""Encode and decode wire messages: values to bytes and back, no IO."""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from orrery.wire.messages import (
    PROTOCOL_VERSION,
    Assignment,
    Heartbeat,
    HeartbeatAck,
    Kill,
    Order,
    Prefetch,
    SliceStatus,
)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# NATS refuses a message over its max_payload (1 MiB by default), so an order that encodes
# larger could never be delivered. The hub checks each job's Assignment against this at
# admission; the rest of the MiB is headroom for the envelope (signature, expiry).
NATS_MAX_PAYLOAD = 1024 * 1024
MAX_ORDER_BYTES = NATS_MAX_PAYLOAD - 64 * 1024

M = TypeVar("M", bound=BaseModel)

AnyMessage = Annotated[
    Heartbeat | HeartbeatAck | SliceStatus | Assignment | Kill | Prefetch,
    Field(discriminator="kind"),
]
_any: TypeAdapter[Heartbeat | HeartbeatAck | SliceStatus | Assignment | Kill | Prefetch] = (
    TypeAdapter(AnyMessage)
)
_order: TypeAdapter[Assignment | Kill | Prefetch] = TypeAdapter(Order)


class WireError(ValueError):
    """A message that does not decode. Never retryable: the same bytes fail again."""

    retryable = False


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json(exclude_none=True).encode()


def _check(data: bytes) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")


def decode(data: bytes, model: type[M]) -> M:
    """Decode bytes as ``model`` or raise WireError saying why."""
    _check(data)
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise WireError(_describe(exc, data)) from None
    except (ValueError, RecursionError) as exc:  # nothing but WireError leaves a decoder
        raise WireError(f"undecodable: {type(exc).__name__}") from None


def decode_order(data: bytes) -> Assignment | Kill | Prefetch:
    _check(data)
    try:
        return _order.validate_json(data)
    except ValidationError as exc:
        raise WireError(_describe(exc, data)) from None
    except (ValueError, RecursionError) as exc:  # nothing but WireError leaves a decoder
        raise WireError(f"undecodable: {type(exc).__name__}") from None


def decode_any(
    data: bytes,
) -> Heartbeat | HeartbeatAck | SliceStatus | Assignment | Kill | Prefetch:
    _check(data)
    try:
        return _any.validate_json(data)
    except ValidationError as exc:
        raise WireError(_describe(exc, data)) from None
    except (ValueError, RecursionError) as exc:  # nothing but WireError leaves a decoder
        raise WireError(f"undecodable: {type(exc).__name__}") from None


def _describe(exc: ValidationError, data: bytes) -> str:
    first = exc.errors(include_url=False)[:3]
    # Locations may hold a peer's dict keys: cut them, this text goes to our logs.
    parts = [
        f"{'.'.join(str(p)[:64] for p in e['loc'])[:256] or '<root>'}: {e['msg'][:256]}"
        for e in first
    ]
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    version_hint = ""
    if b'"v":' in bytes(data) and f'"v":{PROTOCOL_VERSION}'.encode() not in bytes(data):
        version_hint = f" [protocol version differs from ours ({PROTOCOL_VERSION})]"
    return "; ".join(parts) + more + version_hint
