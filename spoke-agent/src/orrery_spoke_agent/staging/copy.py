"""Copy an object-store prefix into a local folder with obstore (the Rust object_store
crate): each object streamed to a file, a few at a time, ``progress`` called with every
chunk's length. Reads use obstore's async API (so a cancelled copy stops at once); file
writes run in worker threads, never on the event loop.

Credentials come from the spoke's environment, as every S3 tool reads them
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import obstore
from obstore.store import S3Store

from orrery.dataset import Location

CONCURRENCY = 8
CHUNK = 8 * 1024 * 1024
WHOLE = 64 * 1024 * 1024  # objects up to this size are read in one piece


def s3_store(bucket: str, endpoint: str | None, region: str | None) -> S3Store:
    kw: dict[str, object] = {"region": region or "us-east-1"}
    if endpoint:
        kw["endpoint"] = endpoint
        kw["virtual_hosted_style_request"] = False
        if endpoint.startswith("http://"):
            kw["client_options"] = {"allow_http": True}
    for var, key in (
        ("AWS_ACCESS_KEY_ID", "access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
        ("AWS_SESSION_TOKEN", "session_token"),
    ):
        if os.environ.get(var):
            kw[key] = os.environ[var]
    return S3Store(bucket, **kw)  # type: ignore[arg-type]


def _relative(key: str, prefix: str) -> PurePosixPath:
    rel = PurePosixPath(key[len(prefix) :].lstrip("/")) if prefix else PurePosixPath(key)
    if not rel.parts or rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"object key {key[:200]!r} does not name a file under the prefix")
    return rel


def _write(dest: Path, data: bytes | memoryview) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as f:
        f.write(data)


async def _download(
    store: S3Store, key: str, size: int, dest: Path, progress: Callable[[int], None]
) -> None:
    result = await obstore.get_async(store, key)
    if size <= WHOLE:
        # Small objects whole: one read, one write on a worker thread.
        data = await result.bytes_async()
        await asyncio.to_thread(_write, dest, memoryview(data))
        progress(len(data))
        return
    await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
    f = await asyncio.to_thread(open, dest, "wb")
    try:
        async for chunk in result.stream(min_chunk_size=CHUNK):
            await asyncio.to_thread(f.write, chunk)
            progress(len(chunk))
    finally:
        await asyncio.to_thread(f.close)


async def copy_prefix(
    uri: str,
    endpoint: str | None,
    region: str | None,
    dest: Path,
    progress: Callable[[int], None],
    *,
    concurrency: int = CONCURRENCY,
) -> int:
    """Copy every object under ``uri`` (``s3://bucket/prefix``) to ``dest``; returns the
    bytes copied."""
    loc = Location(uri=uri, region=region or "unknown")
    store = s3_store(loc.bucket, endpoint, region)
    prefix = loc.prefix

    objects: list[tuple[str, int]] = []
    async for batch in obstore.list(store, prefix=prefix or None):
        objects += [(str(m["path"]), int(m["size"])) for m in batch]
    if not objects:
        raise FileNotFoundError(f"no objects under {uri}")
    gate = asyncio.Semaphore(concurrency)

    async def one(key: str, size: int) -> None:
        async with gate:
            target = dest / _relative(key, prefix)
            await _download(store, key, size, target, progress)

    async with asyncio.TaskGroup() as tg:
        for key, size in objects:
            tg.create_task(one(key, size))
    return sum(size for _, size in objects)
