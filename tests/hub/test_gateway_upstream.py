"""The gateway's upstream HTTP/1.1 client against scripted asyncio servers: each body
framing, connection reuse, and how far a failed request got (the proxy's retry rule
depends on it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from orrery.natsserver import free_port
from orrery_hub.gateway.upstream import Broken, Dropped, Refused, Upstream

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def server(script: Script) -> AsyncIterator[str]:
    """A server running ``script`` on each connection; yields its host:port."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await script(r, w)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        srv.close()


def answering(*answers: bytes, heads: list[bytes] | None = None) -> Script:
    """Reads a request head (and a Content-Length body), answers the next canned bytes;
    keeps the connection for as many answers as given."""

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for a in answers:
            head = await r.readuntil(b"\r\n\r\n")
            if heads is not None:
                heads.append(head)
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:") and heads is not None:
                    heads.append(await r.readexactly(int(line.split(b":")[1])))
            w.write(a)
            await w.drain()

    return script


async def body_of(
    up: Upstream, hostport: str, method: str = "GET", body: bytes = b""
) -> tuple[int, bytes]:
    resp = await up.send(hostport, method, "/x?y=1", [(b"x-test", b"1")], body)
    try:
        return resp.status, b"".join([c async for c in resp.body])
    finally:
        await resp.aclose()


async def test_content_length_chunked_and_until_close_bodies() -> None:
    heads: list[bytes] = []
    sized = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
    up = Upstream()
    async with server(answering(sized, chunked, heads=heads)) as hp:
        assert await body_of(up, hp) == (200, b"hello")
        assert await body_of(up, hp) == (200, b"abcde")
    # header names are case-insensitive (h11 writes them in lower case)
    assert heads[0].lower().startswith(b"get /x?y=1 http/1.1\r\nhost: " + hp.encode())
    assert b"x-test: 1\r\n" in heads[0]
    assert b"content-length" not in heads[0].lower()  # a GET without a body
    async with server(answering(b"HTTP/1.0 200 OK\r\n\r\nto the end")) as hp:
        assert await body_of(up, hp) == (200, b"to the end")
    await up.aclose()


async def test_a_post_body_is_sent_with_its_length() -> None:
    seen: list[bytes] = []
    up = Upstream()
    async with server(answering(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
                                heads=seen)) as hp:
        assert await body_of(up, hp, "POST", b"{\"a\": 1}") == (201, b"")
    assert b"content-length: 8\r\n" in seen[0]
    assert seen[1] == b"{\"a\": 1}"
    await up.aclose()


async def test_an_interim_100_continue_is_skipped() -> None:
    up = Upstream()
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with server(answering(answer)) as hp:
        assert await body_of(up, hp) == (200, b"ok")
    await up.aclose()


async def test_head_and_204_have_no_body_and_keep_the_connection() -> None:
    up = Upstream()
    opened = 0

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal opened
        opened += 1
        await answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                        b"HTTP/1.1 204 No Content\r\n\r\n",
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")(r, w)

    async with server(script) as hp:
        assert await body_of(up, hp, "HEAD") == (200, b"")
        assert await body_of(up, hp) == (204, b"")
        assert await body_of(up, hp) == (200, b"ok")
    assert opened == 1  # one kept-alive connection for all three
    await up.aclose()


async def test_connection_close_is_not_reused() -> None:
    up = Upstream()
    opened = 0

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal opened
        opened += 1
        close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n1"
        await answering(close)(r, w)

    async with server(script) as hp:
        for _ in range(3):
            assert await body_of(up, hp) == (200, b"1")
    assert opened == 3
    await up.aclose()


async def test_an_idle_connection_the_replica_closed_is_replaced_transparently() -> None:
    up = Upstream()
    opened = 0

    async def once(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal opened
        opened += 1
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        # then close, although HTTP/1.1 said keep-alive: as an idle timeout would

    async with server(once) as hp:
        assert await body_of(up, hp) == (200, b"ok")
        await asyncio.sleep(0)  # let the close arrive (or not: both paths end the same)
        assert await body_of(up, hp) == (200, b"ok")
    assert opened == 2
    await up.aclose()


async def test_failures_say_how_far_the_request_got() -> None:
    up = Upstream(connect_timeout=2.0)
    with pytest.raises(Refused):  # nothing listens there
        await up.send(f"127.0.0.1:{free_port()}", "GET", "/", [], b"")

    async def hang_up(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")  # read it, answer nothing

    async with server(hang_up) as hp:
        with pytest.raises(Dropped):
            await up.send(hp, "GET", "/", [], b"")

    async def cut(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await w.drain()

    async with server(cut) as hp:
        resp = await up.send(hp, "GET", "/", [], b"")
        assert resp.status == 200
        with pytest.raises(Broken):
            [c async for c in resp.body]
        await resp.aclose()

    async with server(answering(b"not http at all\r\n\r\n")) as hp:
        with pytest.raises(Dropped):
            await up.send(hp, "GET", "/", [], b"")
    await up.aclose()


async def test_a_body_not_read_to_the_end_closes_its_connection() -> None:
    up = Upstream()
    opened = 0

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal opened
        opened += 1
        await answering(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd",
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd")(r, w)

    async with server(script) as hp:
        resp = await up.send(hp, "GET", "/", [], b"")
        await resp.aclose()  # the caller went away before the body
        assert await body_of(up, hp) == (200, b"abcd")
    assert opened == 2  # the half-read connection was not reused
    assert resp.conn is None  # and was closed, not left to the garbage collector
    await up.aclose()


async def test_idle_connections_to_replicas_that_left_are_closed() -> None:
    up = Upstream()
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with server(answering(ok)) as a, server(answering(ok)) as b:
        assert await body_of(up, a) == (200, b"ok")
        assert await body_of(up, b) == (200, b"ok")
        kept = up.idle[a][0]
        up.retain({b})
        assert a not in up.idle and len(up.idle[b]) == 1
        assert kept.writer.is_closing()
    await up.aclose()


async def test_a_hostile_replica_s_framing_is_refused_not_believed() -> None:
    """A replica is whatever its owner wrote: a response whose framing is ambiguous or
    absurd is an error for that request, never a misread stream or a wedged gateway."""
    up = Upstream()
    for bad in [
        # two different lengths: which body is it?
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"HTTP/1.1 999999 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    ]:
        async with server(answering(bad)) as hp:
            with pytest.raises(Dropped):
                await up.send(hp, "GET", "/", [], b"")
    chunked_lie = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"
    async with server(answering(chunked_lie)) as hp:
        resp = await up.send(hp, "GET", "/", [], b"")
        with pytest.raises(Broken):
            [c async for c in resp.body]
        await resp.aclose()
    assert up.idle.get(hp, []) == []  # nothing broken went back to the pool
    await up.aclose()
