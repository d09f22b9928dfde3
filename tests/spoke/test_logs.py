"""A slice's output, served to the hub: the file reader (tails, safety, following), the
spoke's log server (chunks, a lost reply asked again, limits, idle streams), and the local
executor with real processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from orrery.wire import LogChunk, LogRequest, SliceKey, decode, encode
from orrery_spoke_agent.executor import LogMissing, slice_env
from orrery_spoke_agent.executor.fake import FakeExecutor
from orrery_spoke_agent.executor.local import LocalExecutor
from orrery_spoke_agent.executor.logfile import FileLog, tail_start
from orrery_spoke_agent.logserve import LogServer
from tests.spoke.test_local_executor import assignment

KEY = SliceKey(job="job-1", index=0, epoch=1)


async def drain(source: FileLog, *, wait_s: float = 0.0, limit: int = 10_000) -> bytes:
    out = b""
    for _ in range(limit):
        data, eof = await source.read(7, wait_s)
        out += data
        if eof:
            return out
    raise AssertionError("the stream never ended")


@pytest.mark.parametrize(
    ("text", "lines", "want"),
    [
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc", 2, b"b\nc"),  # no final newline
        (b"a\nb\nc\n", 5, b"a\nb\nc\n"),
        (b"a\nb\nc\n", 0, b""),
        (b"", 3, b""),
        (b"\n\n\n", 1, b"\n"),
    ],
)
def test_tail_starts_at_the_last_lines(
    tmp_path: Path, text: bytes, lines: int, want: bytes
) -> None:
    f = tmp_path / "out"
    f.write_bytes(text)
    fd = os.open(f, os.O_RDONLY)
    try:
        assert text[tail_start(fd, len(text), lines) :] == want
    finally:
        os.close(fd)


def test_a_tail_of_lines_longer_than_the_scan_starts_cut(tmp_path: Path) -> None:
    from orrery_spoke_agent.executor import logfile

    f = tmp_path / "out"
    f.write_bytes(b"x" * (logfile.TAIL_SCAN_BYTES + 10) + b"\nlast\n")
    fd = os.open(f, os.O_RDONLY)
    try:
        start = tail_start(fd, f.stat().st_size, 2)
    finally:
        os.close(fd)
    assert f.stat().st_size - start == logfile.TAIL_SCAN_BYTES  # bounded, never the whole file


async def test_without_follow_a_reading_is_what_the_file_held_when_opened(tmp_path: Path) -> None:
    f = tmp_path / "output.log"
    f.write_bytes(b"one\ntwo\n")
    src = FileLog(f, tail_lines=None, follow=False, ended=lambda: False)
    first, eof = await src.read(4, 0)
    assert (first, eof) == (b"one\n", False)
    with f.open("ab") as w:
        w.write(b"three\n")  # written after the reading began: not part of it
    assert first + await drain(src) == b"one\ntwo\n"
    await src.close()


async def test_following_reads_until_the_attempt_has_ended(tmp_path: Path) -> None:
    f = tmp_path / "output.log"
    done = tmp_path / "exit.json"
    src = FileLog(f, tail_lines=1, follow=True, ended=done.exists)
    assert await src.read(100, 0) == (b"", False)  # not written yet: nothing, not the end
    f.write_bytes(b"old\nnew\n")
    assert await src.read(100, 0) == (b"new\n", False)
    with f.open("ab") as w:
        w.write(b"more\n")
    done.write_text("{}")
    with f.open("ab") as w:
        w.write(b"last words\n")  # after the end was recorded, still before it was asked
    assert await drain(src) == b"more\nlast words\n"
    await src.close()


async def test_a_link_or_a_fifo_in_place_of_the_output_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("do not send")
    link = tmp_path / "output.log"
    link.symlink_to(secret)
    with pytest.raises(LogMissing, match="cannot be read safely"):
        await FileLog(link, tail_lines=None, follow=False, ended=lambda: True).read(10, 0)
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    with pytest.raises(LogMissing, match="not a regular file"):
        await FileLog(fifo, tail_lines=None, follow=True, ended=lambda: True).read(10, 0)


# ---- the log server ----------------------------------------------------------------------


def request(stream: str = "ab12cd34", **kw: object) -> bytes:
    fields: dict[str, object] = {"sender": "hub", "seq": 1, "stream": stream}
    fields |= {"job": KEY.job, "index": KEY.index, "epoch": KEY.epoch} | kw
    return encode(LogRequest.model_validate(fields))


async def ask(server: LogServer, **kw: object) -> LogChunk:
    reply = await server.answer(request(**kw))
    assert reply is not None
    return decode(reply, LogChunk)


@pytest.fixture
async def fake() -> FakeExecutor:
    ex = FakeExecutor()
    a = assignment(["true"])
    await ex.launch(a, slice_env(a))
    return ex


async def test_a_stream_is_read_in_chunks_and_a_lost_reply_is_sent_again(
    fake: FakeExecutor,
) -> None:
    fake.write(KEY, "hello world\n")
    server = LogServer("eu", fake.open_log)
    first = await ask(server, max_bytes=5)
    assert (first.offset, first.raw, first.eof) == (0, b"hello", False)
    # The reply was lost: the hub asks again from 0 and gets the same bytes, nothing skipped.
    assert (await ask(server, max_bytes=5)).raw == b"hello"
    rest = b""
    offset = 5
    while True:
        c = await ask(server, offset=offset, max_bytes=5)
        assert c.offset == offset and c.error is None
        rest += c.raw
        offset += len(c.raw)
        if c.eof:
            break
    assert rest == b" world\n"
    # Asked from anywhere else: refused, saying where the stream is.
    bad = await ask(server, offset=2)
    assert bad.error == "out_of_step" and "at 12" in (bad.detail or "")
    assert fake.closed_logs == 1  # closed at its end


async def test_following_waits_for_output_and_ends_with_the_attempt(fake: FakeExecutor) -> None:
    server = LogServer("eu", fake.open_log)
    task = asyncio.create_task(ask(server, follow=True, wait_s=10))
    fake.write(KEY, "step 1\n")
    c = await asyncio.wait_for(task, 30)
    assert (c.raw, c.eof) == (b"step 1\n", False)
    quiet = await ask(server, offset=7, follow=True, wait_s=0)
    assert (quiet.raw, quiet.eof, quiet.error) == (b"", False, None)
    fake.finish(KEY, 0)
    end = await ask(server, offset=7, follow=True, wait_s=10)
    assert (end.raw, end.eof) == (b"", True)


async def test_unknown_attempts_limits_and_idle_streams(fake: FakeExecutor) -> None:
    now = [0.0]
    server = LogServer("eu", fake.open_log, clock=lambda: now[0], max_streams=2, idle_s=60)
    missing = await ask(server, stream="00000000", epoch=9)
    assert missing.error == "missing" and missing.detail == "never ran here"
    assert (await ask(server, stream="11111111", follow=True)).error is None
    assert (await ask(server, stream="22222222", follow=True)).error is None
    busy = await ask(server, stream="33333333")
    assert busy.error == "busy" and "2 log streams" in (busy.detail or "")
    now[0] = 61.0  # nobody asked for a minute: the client left
    assert (await ask(server, stream="33333333")).error is None
    assert set(server.streams) == {"33333333"} and fake.closed_logs >= 2
    late = await ask(server, stream="11111111", offset=5)
    assert late.error == "out_of_step"
    assert await server.answer(b'{"kind": "log_request"}') is None  # not a request: no reply


async def test_the_local_executor_serves_a_running_and_a_finished_attempt(tmp_path: Path) -> None:
    ex = LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.5)
    await ex.renew_lease(time.time())
    gate = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "print('started', flush=True)\n"
        "print('to stderr', file=sys.stderr, flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n"
        "print('done', flush=True)\n"
    )
    a = assignment([sys.executable, "-c", code])
    try:
        await ex.launch(a, slice_env(a))
        src = await ex.open_log(a.key, tail_lines=None, follow=True)
        seen = b""
        deadline = time.monotonic() + 30
        while b"to stderr" not in seen:
            assert time.monotonic() < deadline, seen
            data, eof = await src.read(1024, 1.0)
            assert not eof
            seen += data
        assert seen == b"started\nto stderr\n"  # running: stdout and stderr, merged
        gate.write_text("")
        rest = b""
        while True:
            data, eof = await src.read(1024, 5.0)
            rest += data
            if eof:
                break
        assert rest == b"done\n"
        await src.close()
        await asyncio.wait_for(ex.wait(a.key), 20)
        # Finished: the last line alone.
        last = await ex.open_log(a.key, tail_lines=1, follow=False)
        assert await drain(last) == b"done\n"  # type: ignore[arg-type]
        with pytest.raises(LogMissing, match="not on this cluster"):
            await ex.open_log(
                SliceKey(job="job-1", index=0, epoch=7), tail_lines=None, follow=False
            )
    finally:
        await ex.close()
