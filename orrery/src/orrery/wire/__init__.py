"""The hub–spoke protocol over NATS, sans-IO: subjects, messages, encode and decode.

Nothing here opens a connection; the hub and the spoke agent bring their own. Every
message carries the protocol version, a ``kind``, its sender and a sequence number, and
decodes to exactly one model or raises :class:`WireError` (which the receiver logs and
drops: a bad message never crashes hub or spoke).
"""

from orrery.wire.codec import WireError, decode, decode_order, encode
from orrery.wire.logs import LogChunk, LogRequest
from orrery.wire.messages import (
    PROTOCOL_VERSION,
    Assignment,
    CachedDataset,
    DataMount,
    DatasetState,
    Heartbeat,
    HeartbeatAck,
    Kill,
    NodeReport,
    Order,
    Prefetch,
    Progress,
    SecretEnv,
    SliceKey,
    SlicePhase,
    SliceReport,
    SliceStatus,
)
from orrery.wire.subjects import Subjects

__all__ = [
    "PROTOCOL_VERSION",
    "Assignment",
    "CachedDataset",
    "DataMount",
    "DatasetState",
    "Heartbeat",
    "HeartbeatAck",
    "Kill",
    "LogChunk",
    "LogRequest",
    "NodeReport",
    "Order",
    "Prefetch",
    "Progress",
    "SecretEnv",
    "SliceKey",
    "SlicePhase",
    "SliceReport",
    "SliceStatus",
    "Subjects",
    "WireError",
    "decode",
    "decode_order",
    "encode",
]
