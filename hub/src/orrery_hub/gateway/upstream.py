"""HTTP/1.1 to the replicas on bare asyncio streams, with a keep-alive pool per replica.

Why not httpx here: its async connection pool costs more per request the more requests
are in flight (every request walks every pooled connection, each check a syscall), so on
this project's 2-core machine one httpx client passed ~240 req/s at 4 in flight and ~80 at
32, against a replica that answers at once; the gateway was bound by it. This client does
only what the proxy needs: send one request with its body, read the status and headers,
then yield the body as it arrives (Content-Length, chunked — decoded, as ``aiter_raw`` — or
until the replica closes), and keep the connection for the next request where it may.

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

MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024
MAX_IDLE_PER_REPLICA = 256
NO_BODY = frozenset({204, 304})


class UpstreamError(Exception):
    pass


class Refused(UpstreamError):
    """Could not connect: the request never reached the replica."""


class Dropped(UpstreamError):
    """The request was sent; no response came."""


class Broken(UpstreamError):
    """The response began, then the connection broke."""


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


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
        head = [f"{method} {target} HTTP/1.1\r\nHost: {hostport}\r\n".encode()]
        head += [k + b": " + v + b"\r\n" for k, v in headers]
        if body or method not in ("GET", "HEAD", "OPTIONS", "DELETE", "TRACE"):
            head.append(b"content-length: %d\r\n" % len(body))
        data = b"".join(head) + b"\r\n" + body
        idle = self.idle.get(hostport)
        while idle:
            conn = idle.pop()
            if conn.reader.at_eof() or conn.writer.is_closing():
                conn.close()
                continue
            try:
                return await self._exchange(conn, hostport, method, data, reused=True)
            except _Stale:
                conn.close()  # the replica closed it while idle: the request never got there
        conn = await self._connect(host, int(port))
        return await self._exchange(conn, hostport, method, data, reused=False)

    async def _exchange(
        self, conn: _Conn, hostport: str, method: str, data: bytes, *, reused: bool
    ) -> Response:
        try:
            conn.writer.write(data)
            await conn.writer.drain()
            raw = await conn.reader.readuntil(b"\r\n\r\n")
            while raw[9:10] == b"1" and raw[9:12] != b"101":  # 100 Continue and such: interim
                raw = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            conn.close()
            if reused and not exc.partial:
                raise _Stale from None
            raise Dropped(f"{hostport}: closed before a response") from None
        except (OSError, asyncio.LimitOverrunError) as exc:
            conn.close()
            raise Dropped(f"{hostport}: {exc}") from None
        lines = raw[:-4].split(b"\r\n")
        try:
            version, code = lines[0].split(b" ", 2)[:2]
            status = int(code)
            headers = []
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                headers.append((k.strip().lower(), v.strip()))
        except ValueError:
            conn.close()
            raise Dropped(f"{hostport}: not an HTTP response") from None
        resp = Response(status, headers, body=_empty(), conn=conn)
        keep = version == b"HTTP/1.1" and (resp.header(b"connection") or b"").lower() != b"close"
        te = (resp.header(b"transfer-encoding") or b"").lower()
        length = resp.header(b"content-length")
        body: AsyncGenerator[bytes, None]
        if method == "HEAD" or status in NO_BODY or 100 <= status < 200:
            body = _empty()
            self._release(hostport, resp, keep)
        elif b"chunked" in te:
            body = self._chunked(hostport, resp, keep)
        elif length is not None and length.isdigit():
            body = self._sized(hostport, resp, keep, int(length))
        else:
            body = self._until_close(conn)
        resp.body = body
        return resp

    def _release(self, hostport: str, resp: Response, keep: bool) -> None:
        conn, resp.conn = resp.conn, None
        if conn is None:
            return
        idle = self.idle.setdefault(hostport, [])
        if keep and len(idle) < MAX_IDLE_PER_REPLICA:
            idle.append(conn)
        else:
            conn.close()

    async def _sized(
        self, hostport: str, resp: Response, keep: bool, n: int
    ) -> AsyncGenerator[bytes, None]:
        assert resp.conn is not None
        conn, done = resp.conn, False
        try:
            while n > 0:
                part = await conn.reader.read(min(n, CHUNK))
                if not part:
                    raise Broken(f"{hostport}: body cut short")
                n -= len(part)
                yield part
            done = True
        except OSError as exc:
            raise Broken(f"{hostport}: {exc}") from None
        finally:
            if done:
                self._release(hostport, resp, keep)
            else:
                conn.close()

    async def _chunked(
        self, hostport: str, resp: Response, keep: bool
    ) -> AsyncGenerator[bytes, None]:
        assert resp.conn is not None
        conn, done = resp.conn, False
        r = conn.reader
        try:
            while True:
                size_line = await r.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while (await r.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers: dropped (hop-by-hop to the caller)
                    done = True
                    return
                data = await r.readexactly(size)
                await r.readexactly(2)
                yield data
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                OSError) as exc:
            raise Broken(f"{hostport}: chunked body broke: {exc}") from None
        finally:
            if done:
                self._release(hostport, resp, keep)
            else:
                conn.close()

    async def _until_close(self, conn: _Conn) -> AsyncGenerator[bytes, None]:
        try:
            while part := await conn.reader.read(CHUNK):
                yield part
        except OSError as exc:
            raise Broken(str(exc)) from None
        finally:
            conn.close()


class _Stale(Exception):
    pass


async def _empty() -> AsyncGenerator[bytes, None]:
    return
    yield b""  # an async generator that yields nothing
