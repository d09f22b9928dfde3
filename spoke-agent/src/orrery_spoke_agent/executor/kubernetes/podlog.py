"""A slice's output on Kubernetes: its pod's log.

While the pod exists the log is streamed from the API (``GET /api/v1/namespaces/NS/pods/
NAME/log``, with ``follow`` and ``tailLines``); a read blocks a thread of a pool kept for
log streams, never the event loop nor the executor's API pool. When the agent deletes a
Job (the hub recorded the attempt's end, or ordered it killed), the pod goes with it, so
the executor first copies the log's last ``ARCHIVE_LINES`` lines (at most
``ARCHIVE_BYTES``) under the spoke's state folder; those copies are kept for the spoke's
slice retention, as the local executor keeps its attempts' folders.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from orrery.wire import SliceKey
from orrery_spoke_agent.executor.base import LogMissing, LogStream
from orrery_spoke_agent.executor.kubernetes import jobs as kj
from orrery_spoke_agent.executor.logfile import FileLog

log = logging.getLogger("orrery.spoke.kubernetes")

ARCHIVE_LINES = 10_000
ARCHIVE_BYTES = 4 * 1024 * 1024
ARCHIVE_TIMEOUT_S = 2.0  # a kill must not wait long on a copy of the output


def archive_file(folder: Path, key: SliceKey) -> Path:
    return folder / f"{kj.job_name(key)}.log"


def write_archive(folder: Path, key: SliceKey, data: bytes) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = archive_file(folder, key)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data[-ARCHIVE_BYTES:])
    tmp.replace(path)


def prune(folder: Path, retention_s: float, now: float | None = None) -> None:
    """Remove archived logs older than ``retention_s``."""
    now = time.time() if now is None else now
    for f in folder.glob("*.log") if folder.is_dir() else ():
        with contextlib.suppress(OSError):
            if now - f.stat().st_mtime > retention_s:
                f.unlink()


class PodLog:
    """A pod's log as a ``LogStream``. ``resp`` is the API's streaming response."""

    def __init__(self, resp: Any, pool: ThreadPoolExecutor) -> None:
        self.resp = resp
        self.pool = pool
        # A read outlives a request that stopped waiting for it: the next request takes its
        # result, so two threads never read one response.
        self._pending: asyncio.Future[bytes] | None = None

    async def read(self, max_bytes: int, wait_s: float) -> tuple[bytes, bool]:
        if self._pending is None:
            loop = asyncio.get_running_loop()
            self._pending = loop.run_in_executor(self.pool, self.resp.read1, max_bytes)
        done, _ = await asyncio.wait({self._pending}, timeout=wait_s)
        if not done:
            return b"", False
        fut, self._pending = self._pending, None
        data = fut.result()
        return (data, False) if data else (b"", True)

    async def close(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            # Closing the connection ends the blocked read with an error nobody awaits.
            pending.add_done_callback(lambda f: f.cancelled() or f.exception())
        with contextlib.suppress(Exception):
            self.resp.close()


def _newest(pods: list[dict[str, Any]]) -> str | None:
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    live.sort(key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
    return str(live[-1]["metadata"]["name"]) if live else None


def _api_status(exc: BaseException) -> tuple[int | None, str]:
    """The API's status code and message (ApiException and its per-status subclasses)."""
    code = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    if not isinstance(code, int):
        return None, str(exc)[:300]
    try:
        message = str(json.loads(body or "")["message"])
    except (TypeError, ValueError, KeyError):
        message = str(getattr(exc, "reason", "") or exc)
    return code, message[:300]


async def open_pod_log(
    core: Any,
    namespace: str,
    pods: list[dict[str, Any]],
    pool: ThreadPoolExecutor,
    archive: Path | None,
    *,
    tail_lines: int | None,
    follow: bool,
) -> LogStream:
    """The live pod's log if the attempt has one, else its archived copy."""
    pod = _newest(pods)
    if pod is not None:
        call = functools.partial(
            core.read_namespaced_pod_log, pod, namespace, follow=follow,
            # No timeout: a followed log may be quiet for long; closing it ends the read.
            tail_lines=tail_lines, _preload_content=False,
        )
        try:
            resp = await asyncio.get_running_loop().run_in_executor(pool, call)
            return PodLog(resp, pool)
        except Exception as exc:
            code, text = _api_status(exc)
            if code == 400:  # "container ... is waiting to start"
                raise LogMissing(f"its container has not started yet: {text}") from None
            if code != 404:
                raise LogMissing(f"the Kubernetes API refused the pod's log: {text}") from None
    if archive is not None and await asyncio.to_thread(archive.exists):
        return FileLog(archive, tail_lines=tail_lines, follow=False, ended=lambda: True)
    if pod is None and not pods:
        raise LogMissing("it has no pod (not created yet, or deleted and its copy removed "
                         "after retention)")
    raise LogMissing("its pod is gone and no copy of its log is here")


async def archive(
    core: Any, namespace: str, pods: list[dict[str, Any]], pool: ThreadPoolExecutor,
    folder: Path, key: SliceKey,
) -> None:
    """Copy the attempt's pod log under ``folder`` before its Job is deleted. Best effort:
    bounded in time and size, and a failure only loses the copy."""
    pod = _newest(pods)
    if pod is None:
        return

    def fetch() -> None:
        resp = core.read_namespaced_pod_log(
            pod, namespace, tail_lines=ARCHIVE_LINES, limit_bytes=ARCHIVE_BYTES,
            _preload_content=False, _request_timeout=ARCHIVE_TIMEOUT_S,
        )
        write_archive(folder, key, resp.data)

    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(pool, fetch), ARCHIVE_TIMEOUT_S + 1
        )
    except Exception as exc:
        log.warning("could not keep a copy of the pod's log: %s", str(exc)[:200],
                    extra={"job": key.job, "slice": key.index, "epoch": key.epoch})
