"""The last lines of a failed slice's output, for its status: a failed job should say
``CUDA out of memory``, not only ``exit code 3``.

The workload can write its own folder, so the log is opened without following a link (a
link to /etc/shadow must not travel to the hub), only if it is a regular file (a FIFO would
block the agent), and only its last few KiB are read.
"""

from __future__ import annotations

import os
import stat

TAIL_BYTES = 4096
TAIL_LINES = 5
MAX_CHARS = 800
PREFIX = "last output: "


def tail_lines(path: str | os.PathLike[str], *, lines: int = TAIL_LINES) -> list[str]:
    """Up to ``lines`` last non-empty lines of ``path``; [] when it cannot be read safely."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return []
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return []
        os.lseek(fd, max(0, st.st_size - TAIL_BYTES), os.SEEK_SET)
        data = os.read(fd, TAIL_BYTES)
    except OSError:
        return []
    finally:
        os.close(fd)
    text = data.decode("utf-8", errors="replace")
    if len(data) == TAIL_BYTES:
        head, _, rest = text.partition("\n")
        # The first line read is likely cut: drop it, unless it is all there is.
        text = rest if rest.strip() else "…" + head
    kept = [x.rstrip() for x in text.splitlines() if x.strip()]
    return kept[-lines:]


def failure_reason(path: str | os.PathLike[str]) -> str | None:
    """``last output: a | b | c`` from the log's tail, bounded; None when it is empty."""
    kept = tail_lines(path)
    if not kept:
        return None
    joined = " | ".join(kept)
    if len(joined) > MAX_CHARS:
        joined = "…" + joined[-(MAX_CHARS - 1) :]
    return PREFIX + joined
