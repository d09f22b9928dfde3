"""An attempt's output file, read as a ``LogStream``: the local executor's ``output.log``
and the Kubernetes executor's archived pod logs.

The workload can write its own folder, so the file is opened as ``outputtail`` opens it:
without following a link (a link to /etc/shadow must not travel to the hub), only if it is
a regular file (a FIFO would block), never read past what was asked. File reads run on a
thread; the event loop only waits.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from orrery_spoke_agent.executor.base import LogMissing

POLL_S = 0.1  # how often a followed file is checked for new output
BLOCK = 64 * 1024
# ``tail_lines`` looks at most this far back: a tail of very long lines starts cut.
TAIL_SCAN_BYTES = 8 * 1024 * 1024


def tail_start(fd: int, size: int, lines: int) -> int:
    """The offset where the last ``lines`` lines of the file begin."""
    if lines <= 0 or size == 0:
        return size
    # A final newline ends the last line; it does not begin another.
    want = lines + (1 if os.pread(fd, 1, size - 1) == b"\n" else 0)
    seen = 0
    end = size
    floor = max(0, size - TAIL_SCAN_BYTES)
    while end > floor:
        start = max(floor, end - BLOCK)
        block = os.pread(fd, end - start, start)
        i = len(block)
        while (i := block.rfind(b"\n", 0, i)) != -1:
            seen += 1
            if seen == want:
                return start + i + 1
        end = start
    return floor


class FileLog:
    """Output from ``path``. Without ``follow``, what the file holds when first read;
    with it, until ``ended()`` says the attempt is over and every byte was read. A file
    that does not exist yet (the attempt is starting) reads as empty until it does."""

    def __init__(
        self, path: Path, *, tail_lines: int | None, follow: bool, ended: Callable[[], bool]
    ) -> None:
        self.path = path
        self.tail_lines = tail_lines
        self.follow = follow
        self.ended = ended
        self.fd: int | None = None
        self.pos = 0
        self.limit: int | None = None  # without follow: the size when opened

    def _open(self) -> bool:
        if self.fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return False
        except OSError as exc:  # ELOOP: a link put in its place
            raise LogMissing(f"the output file cannot be read safely: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise LogMissing("the output file is not a regular file")
        self.fd = fd
        self.pos = 0 if self.tail_lines is None else tail_start(fd, st.st_size, self.tail_lines)
        if not self.follow:
            self.limit = st.st_size
        return True

    def _step(self, max_bytes: int) -> tuple[bool, bytes]:
        # Whether it had ended is asked before reading: output written before the end is
        # then read in this step or the next, never left behind.
        ended = self.follow and self.ended()
        if not self._open():
            if not self.follow and self.limit is None:
                self.limit = 0  # nothing there when first asked: an empty reading
            return ended, b""
        assert self.fd is not None
        n = max_bytes if self.limit is None else min(max_bytes, self.limit - self.pos)
        data = os.pread(self.fd, n, self.pos) if n > 0 else b""
        self.pos += len(data)
        return ended, data

    async def read(self, max_bytes: int, wait_s: float) -> tuple[bytes, bool]:
        deadline = time.monotonic() + wait_s
        while True:
            ended, data = await asyncio.to_thread(self._step, max_bytes)
            if data:
                return data, False
            if not self.follow or ended:
                return b"", True
            if time.monotonic() >= deadline:
                return b"", False
            await asyncio.sleep(POLL_S)  # a file has no change notification we can wait on

    async def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
