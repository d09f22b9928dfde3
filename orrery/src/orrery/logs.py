"""Structured logs in logfmt: one line per event, every part a ``key=value`` pair.

    ts=2026-12-03T05:51:38.123Z level=info logger=orrery.spoke msg="slice started" job=j1 slice=0

Pass context with ``extra={...}``; every field given there is printed after the message,
so ``grep job=llama-1f2e3d`` finds a job's whole story across hub and spoke logs. A value
with a space, a quote, an ``=``, a control character or nothing at all is quoted (with
``\\"``, ``\\\\``, ``\\n``, ``\\r``, ``\\t`` escaped), so a reason a workload chose can neither
split a line nor forge a field; ``parse`` reads a line back. A field whose name says it
holds a credential, or a value that is a private key, is written as ``[redacted]``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
# Names of fields that hold a secret; never printed, whatever a caller passes.
_SECRET_NAME = re.compile(
    r"(token|password|passwd|secret|private_?key|authorization|cookie)$", re.IGNORECASE
)
_SECRET_VALUE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
REDACTED = "[redacted]"
_BARE = re.compile(r"[^\s\"=\\\x00-\x1f\x7f]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(value: object) -> str:
    """A value as logfmt writes it: bare when it can be, else in double quotes."""
    text = "null" if value is None else str(value)
    if _BARE.fullmatch(text):
        return text
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _field(key: str, value: object) -> str:
    if _SECRET_NAME.search(key) or _SECRET_VALUE.search(str(value)):
        value = REDACTED
    name = re.sub(r"[^\w.\-]", "_", key) or "_"
    return f"{name}={quote(value)}"


def parse(line: str) -> dict[str, str]:
    """The fields of one logfmt line, values unquoted (what a log reader would do)."""
    out: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        j = line.find("=", i)
        if j < 0:
            break
        key = line[i:j]
        i = j + 1
        if i < n and line[i] == '"':
            i += 1
            buf = []
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n:
                    esc = line[i + 1]
                    if esc == "u" and i + 5 < n:
                        buf.append(chr(int(line[i + 2 : i + 6], 16)))
                        i += 6
                        continue
                    buf.append({"n": "\n", "r": "\r", "t": "\t"}.get(esc, esc))
                    i += 2
                    continue
                buf.append(line[i])
                i += 1
            i += 1  # the closing quote
            out[key] = "".join(buf)
        else:
            j = line.find(" ", i)
            j = n if j < 0 else j
            out[key] = line[i:j]
            i = j
    return out


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={quote(record.name)}",
            f"msg={quote(record.getMessage())}",
        ]
        parts += [
            _field(k, v)
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        ]
        if record.exc_info:
            parts.append(f"exc={quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


KeyValueFormatter = LogfmtFormatter  # the name it had before logfmt


def setup(level: str | None = None, *, stream: object = None) -> None:
    lvl = (level or os.environ.get("ORRERY_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    for noisy in ("nats", "uvicorn", "httpx", "httpcore", "kubernetes", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
