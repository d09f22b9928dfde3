"""HTTP/1.1 to the replicas: h11 for the protocol, bare asyncio streams and a keep-alive
pool per replica for the connections.

Why not httpx here: its async connection pool costs more per request the more requests
are in flight (every request walks every pooled connection, each check a syscall), so on
this project's 2-core machine one httpx client passed ~240 req/s at 4 in flight and ~80 at
32, against a replica that answers at once; the gateway was bound by it. The framing —
request and response heads, Content-Length, chunked bodies, bodies that end when the
replica closes, HEAD and 204/304, interim 1xx, whether a connection may be reused — is
h11's, the protocol engine under httpx and uvicorn: a replica runs whatever its owner
wrote, and its answers are parsed as strictly as any HTTP peer's. Only the pool is ours.

Failures say how far the request got, which is what the proxy's retry rule needs:
``Refused`` (never reached the replica), ``Dropped`` (sent, no response), ``Broken``
(the response began, then broke). A kept-alive connection the replica closed meanwhile
is replaced once, transparently (the request never reached the replica).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11

MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024
MAX_IDLE_PER_REPLICA = 256
# Methods whose request carries no body unless one is given (the others always state a
# length, so that a replica never waits for a body that is not coming).
BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})


class UpstreamError(Exception):
    pass


class Refused(UpstreamError):
    """Could not connect (or the request could not be written): it never reached the
    replica."""


class Dropped(UpstreamError):
    """The request was sent; no response came."""


class Broken(UpstreamError):
    """The response began, then the connection broke."""


class _Stale(Exception):
    """A kept-alive connection the replica had closed: the request never got there."""


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h: h11.Connection = field(
        default_factory=lambda: h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    )

    def close(self) -> None:
        self.writer.close()

    async def next_event(self) -> Any:
        """h11's next event, reading from the replica as it needs (b"" at EOF)."""
        while True:
            event = self.h.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h.receive_data(await self.reader.read(CHUNK))


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-case
    body: AsyncGenerator[bytes, None] = field(repr=False)
    conn: _Conn | None = field(default=None, repr=False)  # None once given back

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    async def aclose(self) -> None:
        """Close the connection unless the body was read to the end and it went back to
        the pool (a body never started has no ``finally`` of its own to run)."""
        await self.body.aclose()
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Upstream:
    def __init__(self, *, connect_timeout: float = 2.0) -> None:
        self.connect_timeout = connect_timeout
        self.idle: dict[str, list[_Conn]] = {}

    async def aclose(self) -> None:
        for conns in self.idle.values():
            for c in conns:
                c.close()
        self.idle.clear()

    def retain(self, hostports: set[str]) -> None:
        """Close the idle connections to every replica not named (gone from the routes)."""
        for hp in [hp for hp in self.idle if hp not in hostports]:
            for c in self.idle.pop(hp):
                c.close()

    async def _connect(self, host: str, port: int) -> _Conn:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=MAX_HEAD), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise Refused(f"{host}:{port}: {exc}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:  # headers and body go out as one write anyway; never wait on ACKs
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Conn(reader, writer)

    async def send(
        self,
        hostport: str,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
    ) -> Response:
        """Send the request; return the response with its headers read and its body to
        iterate (the connection goes back to the pool once the body is read); call
        ``aclose`` on it in any case."""
        host, _, port = hostport.rpartition(":")
        head = [(b"host", hostport.encode()), *headers]
        if body or method not in BODILESS:
            head.append((b"content-length", b"%d" % len(body)))
        try:
            request = h11.Request(method=method, target=target, headers=head)
        except h11.LocalProtocolError as exc:
            raise Refused(f"{hostport}: cannot send this request: {exc}") from None
        idle = self.idle.get(hostport)
        while idle:
            conn = idle.pop()
            if conn.reader.at_eof() or conn.writer.is_closing():
                conn.close()
                continue
            try:
                return await self._exchange(conn, hostport, request, body, reused=True)
            except _Stale:
                conn.close()
        conn = await self._connect(host, int(port))
        return await self._exchange(conn, hostport, request, body, reused=False)

    async def _exchange(
        self, conn: _Conn, hostport: str, request: h11.Request, body: bytes, *, reused: bool
    ) -> Response:
        h = conn.h
        data = h.send(request) or b""
        if body:
            data += h.send(h11.Data(data=body)) or b""
        data += h.send(h11.EndOfMessage()) or b""
        heard = False
        try:
            conn.writer.write(data)
            await conn.writer.drain()
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    got = await conn.reader.read(CHUNK)
                    heard = heard or bool(got)
                    h.receive_data(got)
                    continue
                if isinstance(event, h11.InformationalResponse):
                    continue  # 100 Continue and such: interim
                if isinstance(event, h11.Response):
                    break
                raise h11.RemoteProtocolError("closed before a response")
        except h11.RemoteProtocolError as exc:
            conn.close()
            if reused and not heard:
                raise _Stale from None
            raise Dropped(f"{hostport}: no HTTP response: {exc}") from None
        except OSError as exc:
            conn.close()
            raise Dropped(f"{hostport}: {exc}") from None
        headers = [(bytes(k), bytes(v)) for k, v in event.headers]
        resp = Response(event.status_code, headers, body=_empty(), conn=conn)
        resp.body = self._body(hostport, resp)
        return resp

    def _release(self, hostport: str, resp: Response) -> None:
        """The response was read to its end: its connection back to the pool, where h11
        says it may serve another request (else closed)."""
        conn, resp.conn = resp.conn, None
        if conn is None:
            return
        idle = self.idle.setdefault(hostport, [])
        h = conn.h
        if (
            h.our_state is h11.DONE
            and h.their_state is h11.DONE
            and len(idle) < MAX_IDLE_PER_REPLICA
        ):
            h.start_next_cycle()
            idle.append(conn)
        else:
            conn.close()

    async def _body(self, hostport: str, resp: Response) -> AsyncGenerator[bytes, None]:
        assert resp.conn is not None
        conn, done = resp.conn, False
        try:
            while True:
                event = await conn.next_event()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    done = True
                    return
                else:  # the connection closed before the body's end
                    raise Broken(f"{hostport}: body cut short")
        except (h11.RemoteProtocolError, OSError) as exc:
            raise Broken(f"{hostport}: body broke: {exc}") from None
        finally:
            if done:
                self._release(hostport, resp)
            else:
                conn.close()


async def _empty() -> AsyncGenerator[bytes, None]:
    return
    yield b""  # an async generator that yields nothing
