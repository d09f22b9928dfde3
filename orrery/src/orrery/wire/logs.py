"""Reading a slice's output from the spoke that holds it, over NATS request/reply.

The hub asks, the spoke answers, one bounded chunk per request (a pull, so the hub never
receives faster than its HTTP client reads, and a client that leaves simply stops the
asking)::

    hub -> orrery.v1.cluster.<name>.logs   LogRequest(stream, key, offset, ...)
    spoke -> the request's reply inbox     LogChunk(stream, offset, data, eof | error)

``stream`` names one reading of one attempt's output, chosen by the hub. The spoke keeps
its reader between requests (a file position; on Kubernetes an open pod-log stream) and
forgets it when idle. ``offset`` is how many bytes of the stream the hub has received:
asking again at the offset of the last chunk gets that chunk again (its reply was lost),
so a retry never skips or repeats output. ``follow`` waits up to ``wait_s`` for new output
before answering with none; the stream ends (``eof``) when the attempt has ended and every
byte was read, or, without ``follow``, at the output's end when it was opened.
"""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import Field

from orrery.wire.messages import Count, Name, Reason, SliceKey, _Envelope

# Raw bytes in one chunk: base64 makes it 88 KiB, far under NATS' 1 MiB max_payload.
MAX_CHUNK_BYTES = 64 * 1024
MAX_TAIL_LINES = 100_000
# A request waits at most this long for new output: the hub's request timeout is above it.
MAX_WAIT_S = 10.0
_STREAM = r"^[0-9a-f]{8,64}$"

LogError = Literal["missing", "busy", "out_of_step", "failed"]


class LogRequest(_Envelope):
    kind: Literal["log_request"] = "log_request"
    stream: str = Field(pattern=_STREAM)
    job: Name
    index: Count
    epoch: Count
    offset: Count = 0
    # Read when the stream is opened (offset 0): start this many lines before the end.
    tail_lines: int | None = Field(default=None, ge=0, le=MAX_TAIL_LINES)
    follow: bool = False
    max_bytes: int = Field(default=MAX_CHUNK_BYTES, ge=1, le=MAX_CHUNK_BYTES)
    wait_s: float = Field(default=0.0, ge=0, le=MAX_WAIT_S)

    @property
    def key(self) -> SliceKey:
        return SliceKey(job=self.job, index=self.index, epoch=self.epoch)


class LogChunk(_Envelope):
    """One answer. ``error``: ``missing`` (no output of that attempt here: it never ran on
    this cluster, or its files were removed after retention), ``busy`` (too many streams
    open on this spoke), ``out_of_step`` (the stream is unknown or at another offset),
    ``failed`` (reading failed; ``detail`` says why)."""

    kind: Literal["log_chunk"] = "log_chunk"
    stream: str = Field(pattern=_STREAM)
    offset: Count = 0  # where ``data`` starts in the stream
    data: str = Field(default="", max_length=(MAX_CHUNK_BYTES + 2) // 3 * 4)  # base64
    eof: bool = False
    error: LogError | None = None
    detail: Reason | None = None

    @property
    def raw(self) -> bytes:
        return base64.b64decode(self.data, validate=True) if self.data else b""

    @staticmethod
    def pack(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")
