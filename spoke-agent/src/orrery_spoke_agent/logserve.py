"""Serving slices' output to the hub (``orrery.wire.logs``).

The agent subscribes to its cluster's log subject and hands each request's bytes to
``LogServer.answer``, which returns the reply's bytes; no NATS in here. A stream's reader
(``Executor.open_log``) is kept between the hub's requests, so each answer continues where
the last one ended, and closed once the stream has ended or has not been asked for in
``idle_s`` (the hub's client left). At most ``max_streams`` readers are open and
``max_inflight`` requests served at once: past either, the answer is ``busy``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from orrery.wire import LogChunk, LogRequest, SliceKey, WireError, decode, encode
from orrery.wire.messages import clip
from orrery_spoke_agent.executor.base import LogMissing, LogStream

log = logging.getLogger("orrery.spoke.logs")

MAX_STREAMS = 32
MAX_INFLIGHT = 64
IDLE_S = 60.0

OpenLog = Callable[..., Awaitable[LogStream]]


@dataclass
class _Stream:
    key: SliceKey
    source: LogStream
    used: float
    next: int = 0  # bytes of the stream sent so far
    last: LogChunk | None = None  # sent again when its reply was lost
    done: bool = False
    held: bytes = b""  # read beyond a request's max_bytes: sent first next time
    held_eof: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LogServer:
    def __init__(
        self,
        cluster: str,
        open_log: OpenLog,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_streams: int = MAX_STREAMS,
        max_inflight: int = MAX_INFLIGHT,
        idle_s: float = IDLE_S,
    ) -> None:
        self.cluster = cluster
        self.open_log = open_log
        self.clock = clock
        self.max_streams = max_streams
        self.max_inflight = max_inflight
        self.idle_s = idle_s
        self.streams: dict[str, _Stream] = {}
        self.inflight = 0
        self._seq = itertools.count(1)

    async def subscribe(self, nc: NATS, subject: str, tg: asyncio.TaskGroup) -> None:
        """Answer the requests on ``subject``, each in its own task of ``tg``: a followed
        stream waits for output, and must not hold up the next request."""

        async def respond(msg: Msg) -> None:
            try:
                reply = await self.answer(msg.data)
                if reply is not None and msg.reply:
                    await msg.respond(reply)
            except Exception:  # one bad answer never takes the agent down
                log.exception("answering a log request failed", extra={"cluster": self.cluster})

        async def on_request(msg: Msg) -> None:
            tg.create_task(respond(msg), name="log request")

        await nc.subscribe(subject, cb=on_request)

    async def answer(self, data: bytes) -> bytes | None:
        """The reply to a request's bytes; None for bytes that are no request (logged)."""
        try:
            req = decode(data, LogRequest)
        except WireError as exc:
            log.warning("invalid log request dropped: %s", exc, extra={"cluster": self.cluster})
            return None
        if self.inflight >= self.max_inflight:
            return encode(self._reply(req, error="busy", detail="too many log requests at once"))
        self.inflight += 1
        try:
            return encode(await self._serve(req))
        finally:
            self.inflight -= 1

    def _reply(self, req: LogRequest, **kw: object) -> LogChunk:
        return LogChunk.model_validate(
            {"sender": f"spoke/{self.cluster}", "seq": next(self._seq), "stream": req.stream} | kw
        )

    async def _serve(self, req: LogRequest) -> LogChunk:
        await self.sweep()
        s = self.streams.get(req.stream)
        if s is None:
            if req.offset != 0:
                return self._reply(req, error="out_of_step", detail="no such stream (idle?)")
            if len(self.streams) >= self.max_streams:
                return self._reply(
                    req, error="busy", detail=f"{self.max_streams} log streams already open"
                )
            try:
                source = await self.open_log(req.key, tail_lines=req.tail_lines, follow=req.follow)
            except LogMissing as exc:
                return self._reply(req, error="missing", detail=clip(exc.reason))
            except Exception as exc:
                log.exception("opening a slice's output failed", extra={"cluster": self.cluster})
                return self._reply(req, error="failed", detail=clip(f"{type(exc).__name__}: {exc}"))
            s = self.streams.setdefault(req.stream, _Stream(req.key, source, self.clock()))
            if s.source is not source:  # a retry opened it meanwhile
                await source.close()
        if s.key != req.key:
            return self._reply(req, error="out_of_step", detail="the stream reads another attempt")
        async with s.lock:
            s.used = self.clock()
            if req.offset == s.next and not s.done:
                return await self._read(s, req)
            if s.last is not None and req.offset == s.last.offset:
                return s.last
            return self._reply(
                req, error="out_of_step", detail=f"asked from byte {req.offset}, at {s.next}"
            )

    async def _read(self, s: _Stream, req: LogRequest) -> LogChunk:
        try:
            if s.held:
                data, eof = s.held, s.held_eof
            else:
                data, eof = await s.source.read(req.max_bytes, req.wait_s)
            s.held = data[req.max_bytes :]
            s.held_eof, data = eof, data[: req.max_bytes]
            eof = eof and not s.held
        except LogMissing as exc:
            chunk = self._reply(req, offset=s.next, error="missing", detail=clip(exc.reason))
            data, eof = b"", True
        except Exception as exc:
            log.exception("reading a slice's output failed", extra={"cluster": self.cluster})
            detail = clip(f"{type(exc).__name__}: {exc}")
            chunk = self._reply(req, offset=s.next, error="failed", detail=detail)
            data, eof = b"", True
        else:
            chunk = self._reply(req, offset=s.next, data=LogChunk.pack(data), eof=eof)
        s.next += len(data)
        s.last = chunk
        s.used = self.clock()
        if eof:
            s.done = True
            await s.source.close()
        return chunk

    async def sweep(self) -> None:
        """Close the readers of streams nobody asked for in ``idle_s``."""
        now = self.clock()
        for name, s in list(self.streams.items()):
            if now - s.used > self.idle_s and not s.lock.locked():
                del self.streams[name]
                if not s.done:
                    await s.source.close()

    async def close(self) -> None:
        for s in self.streams.values():
            if not s.done:
                await s.source.close()
        self.streams.clear()
