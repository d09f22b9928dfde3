"""A job's output, fetched from the spokes that hold it (``orrery.wire.logs``).

Called by the hub service (``runtime.service``) for ``GET /v1/jobs/{id}/logs``. ``plan``
picks the attempts a request shows, oldest epoch first (pure); ``fetch`` reads one attempt
from its cluster in bounded chunks over NATS request/reply, following it if asked;
``stream`` writes them one after another, each under a header line when there are several.
The hub stores none of it: the output stays where the slice ran, for that spoke's retention.

A follow ends when the spoke says the attempt has ended and every byte was read, when the
hub's own record says the attempt ended and the spoke has nothing more, or when the HTTP
client leaves (the generator is closed; the spoke closes the idle stream by itself).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from orrery.errors import Conflict, Gone, InvalidInput, NotFound, OrreryError, Unavailable
from orrery.resources import AttemptView, JobPublic
from orrery.wire import LogChunk, LogRequest, SliceKey, Subjects, WireError, decode, encode
from orrery.wire.logs import MAX_CHUNK_BYTES

FOLLOW_WAIT_S = 5.0  # a followed request waits this long on the spoke for new output
REPLY_SLACK_S = 5.0  # beyond that wait, how long a reply may take before a retry
TRIES = 2  # a request unanswered this many times: the cluster is unreachable
_seq = itertools.count(1)


@dataclass(frozen=True)
class LogQuery:
    slice: int | None = None
    epoch: int | None = None
    follow: bool = False
    tail: int | None = None  # lines per attempt


def plan(job: JobPublic, attempts: list[AttemptView], q: LogQuery) -> list[AttemptView]:
    """The attempts to show, by epoch then slice. Raises when there is nothing to show."""
    slices = int(job.spec.get("slices", 1))
    if q.slice is not None and q.slice >= slices:
        raise InvalidInput(f"slice: job {job.id} has {slices} slice(s), numbered from 0")
    chosen = [
        a
        for a in attempts
        if (q.slice is None or a.index == q.slice) and (q.epoch is None or a.epoch == q.epoch)
    ]
    if not chosen and q.epoch is not None:
        which = f"slice {q.slice}" if q.slice is not None else "any slice"
        known = sorted({a.epoch for a in attempts if q.slice is None or a.index == q.slice})
        epochs = ", ".join(map(str, known)) or "none yet"
        raise NotFound(f"job {job.id} has no epoch {q.epoch} for {which}; its epochs: {epochs}")
    if not chosen:
        why = f" ({job.status.reason})" if job.status.reason else ""
        raise Conflict(
            f"job {job.id} has no output yet: no slice has been placed; it is "
            f"{job.status.phase}{why}"
        )
    return sorted(chosen, key=lambda a: (a.epoch, a.index, a.id or 0))


def header(a: AttemptView) -> bytes:
    return f"==> slice {a.index} · epoch {a.epoch} · {a.cluster} · {a.phase} <==\n".encode()


def _where(a: AttemptView) -> str:
    return f"slice {a.index} epoch {a.epoch}"


async def fetch(
    nc: NATS,
    a: AttemptView,
    key: SliceKey,
    q: LogQuery,
    *,
    lost: bool,
    still_open: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """One attempt's output from its cluster. Raises Unavailable (the cluster did not
    answer) or Gone (its files are no longer there)."""
    subject = Subjects(a.cluster).logs
    stream = uuid.uuid4().hex
    wait = FOLLOW_WAIT_S if q.follow else 0.0
    offset = 0
    while True:
        req = LogRequest(
            sender="hub", seq=next(_seq), stream=stream, job=key.job, index=key.index,
            epoch=key.epoch, offset=offset, tail_lines=q.tail, follow=q.follow,
            max_bytes=MAX_CHUNK_BYTES, wait_s=wait,
        )  # fmt: skip
        chunk = await _ask(nc, subject, encode(req), wait + REPLY_SLACK_S, a, lost=lost)
        if chunk.error == "missing":
            raise Gone(
                f"the output of {_where(a)} is no longer on cluster {a.cluster}: "
                f"{chunk.detail or 'not found'} (a spoke keeps an ended attempt's output for "
                "its --slice-retention, 24 h by default)"
            )
        if chunk.error is not None:
            raise Unavailable(
                f"cluster {a.cluster} could not serve the output of {_where(a)}: "
                f"{chunk.error}: {chunk.detail or ''}".rstrip(": ")
            )
        if chunk.offset != offset:
            raise Unavailable(f"cluster {a.cluster} answered out of step; try again")
        data = chunk.raw
        offset += len(data)
        if data:
            yield data
        if chunk.eof:
            return
        if q.follow and not data and not await still_open():
            return  # the hub recorded its end; the spoke has nothing more to give


async def _ask(
    nc: NATS, subject: str, payload: bytes, reply_s: float, a: AttemptView, *, lost: bool
) -> LogChunk:
    for _ in range(TRIES):
        try:
            msg = await nc.request(subject, payload, timeout=reply_s)
        except NoRespondersError:
            break  # nobody listens there: asking again will not help
        except NatsTimeout:
            continue  # the same request again: the spoke answers it with the same chunk
        try:
            return decode(msg.data, LogChunk)
        except WireError as exc:
            raise Unavailable(f"cluster {a.cluster} sent an invalid answer: {exc}") from None
    gone = (
        "; it is Lost, and the logs of a lost cluster may be gone with it"
        if lost
        else " (is its spoke agent running?)"
    )
    raise Unavailable(f"cluster {a.cluster} did not answer for the output of {_where(a)}{gone}")


def _note(exc: OrreryError, last: bytes) -> bytes:
    """An error in the output's place, on a line of its own."""
    return (b"" if last in (b"", b"\n") else b"\n") + f"[orrery] {exc.message}\n".encode()


async def stream(
    chosen: list[AttemptView], one: Callable[[AttemptView], AsyncIterator[bytes]]
) -> AsyncGenerator[bytes]:
    """The chosen attempts' output in order. One attempt: its bytes alone; an error before
    any output is raised (it becomes the HTTP status), one after is written as a last
    line. Several: each under a header line, an error written in its place."""
    if len(chosen) == 1:
        last = b""
        try:
            async for data in one(chosen[0]):
                last = data[-1:]
                yield data
        except OrreryError as exc:
            if not last:
                raise
            yield _note(exc, last)
        return
    for a in chosen:
        yield header(a)
        last = b"\n"
        try:
            async for data in one(a):
                last = data[-1:]
                yield data
        except OrreryError as exc:
            yield _note(exc, last)
            continue
        if last != b"\n":
            yield b"\n"


async def open_logs(
    job: JobPublic,
    attempts: list[AttemptView],
    q: LogQuery,
    *,
    nc: NATS | None,
    lost: Callable[[str], bool],
    still_open: Callable[[AttemptView], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """The response body for ``q``, its first piece already fetched: what goes wrong
    before any output (no such slice or epoch, the one cluster asked is unreachable, the
    output is gone) raises here, so it becomes the HTTP status and not a cut stream."""
    chosen = plan(job, attempts, q)
    if nc is None or not nc.is_connected:
        raise Unavailable("the hub is not connected to NATS: it cannot reach any cluster")
    conn = nc

    def one(a: AttemptView) -> AsyncIterator[bytes]:
        key = SliceKey(job=job.id, index=a.index, epoch=a.epoch)
        return fetch(conn, a, key, q, lost=lost(a.cluster), still_open=lambda: still_open(a))

    body = stream(chosen, one)
    first = await anext(body, b"")

    async def primed() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for data in body:
                yield data
        finally:
            await body.aclose()

    return primed()
