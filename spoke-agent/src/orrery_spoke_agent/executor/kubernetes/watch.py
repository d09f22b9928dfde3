"""List-then-watch one Kubernetes resource into memory, in a thread of its own.

What client-go's reflector does, small: list (remembering the list's resourceVersion),
then watch from that version, applying ADDED/MODIFIED/DELETED to a dict; a watch that ends
(its server-side timeout) is resumed from the last version seen; a ``410 Gone`` (the
version was compacted away) or any error starts over with a fresh list, after a jittered,
capped backoff. No polling: between events nothing is asked.

The ``kubernetes`` client is synchronous, so each reflector blocks its own thread and never
the agent's event loop; ``on_change`` is called from that thread after every change (the
executor hops it onto the loop with ``call_soon_threadsafe``).

Created by ``kubernetes.KubeExecutor``; objects are kept as the API's JSON dicts.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from tenacity import RetryCallState, Retrying, wait_random_exponential

log = logging.getLogger("orrery.spoke.kubernetes")

ListFn = Callable[..., Any]
Obj = dict[str, Any]


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


def _key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace") or ""
    return f"{ns}/{meta.get('name', '')}"


class Reflector:
    def __init__(self, name: str, fn: ListFn, *, on_change: Callable[[], None],
                 watch_timeout_s: float, cluster: str, **kwargs: Any) -> None:
        self.name = name
        self.fn = fn
        self.kwargs = kwargs
        self.on_change = on_change
        self.watch_timeout_s = max(1, int(watch_timeout_s))
        self.cluster = cluster
        self.synced = threading.Event()
        self.lists = 0  # how many times it listed (a 410 or an error lists again)
        self.errors = 0  # how many list or watch calls failed (logged, then retried)
        self._objs: dict[str, Obj] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(target=self._run, name=f"orrery-watch-{name}",
                                        daemon=True)
        self._wait = wait_random_exponential(multiplier=0.2, max=5)

    # ---- the public, thread-safe view --------------------------------------------------

    def items(self) -> list[Obj]:
        with self._lock:
            return list(self._objs.values())

    def get(self, namespace: str | None, name: str) -> Obj | None:
        with self._lock:
            return self._objs.get(f"{namespace or ''}/{name}")

    def start(self) -> Reflector:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            try:
                # shutdown() (urllib3 >= 2.3) wakes the read blocked in the watch thread;
                # close() alone does not.
                getattr(resp, "shutdown", resp.close)()
            except Exception:  # closing from another thread may race with the read
                pass
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                rv = self._list()
                failures = 0
                while not self._stop.is_set():
                    rv = self._watch(rv)
            except Gone:
                log.info("watch expired (410 Gone): listing again",
                         extra={"cluster": self.cluster, "resource": self.name})
            except Exception as exc:  # any failure: back off, list again
                if self._stop.is_set():
                    return
                failures += 1
                self.errors += 1
                state = RetryCallState(Retrying(), None, (), {})
                state.attempt_number = failures
                delay = self._wait(state)
                log.warning("watch failed (%s): listing again in %.1fs", _short(exc), delay,
                            extra={"cluster": self.cluster, "resource": self.name})
                self._stop.wait(delay)

    def _list(self) -> str:
        resp = self.fn(_preload_content=False, _request_timeout=30, **self.kwargs)
        data = json.loads(resp.data)
        objs = {_key(o): o for o in data.get("items") or []}
        with self._lock:
            self._objs = objs
        self.lists += 1
        self.synced.set()
        self.on_change()
        return str((data.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, rv: str) -> str:
        from kubernetes.watch.watch import iter_resp_lines

        resp = self.fn(watch=True, resource_version=rv, allow_watch_bookmarks=True,
                       timeout_seconds=self.watch_timeout_s, _preload_content=False,
                       _request_timeout=(10, self.watch_timeout_s + 10), **self.kwargs)
        self._resp = resp
        try:
            status = getattr(resp, "status", 200)
            if status == 410:
                raise Gone()
            if not 200 <= status < 300:
                raise RuntimeError(f"watch refused: HTTP {status}")
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                if not line or self._stop.is_set():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if kind == "BOOKMARK":
                    continue
                with self._lock:
                    if kind == "DELETED":
                        self._objs.pop(_key(obj), None)
                    else:
                        self._objs[_key(obj)] = obj
                self.on_change()
        finally:
            self._resp = None
            resp.release_conn()
        return rv


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
