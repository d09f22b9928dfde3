"""An emulated Kubernetes API for the kubernetes executor's tests: kmock, plus our own help.

``kmock.KubernetesEmulator`` (kmock 0.8) is a real HTTP server that stores objects and
serves list, watch, get, create, patch and delete. What the executor relies on and kmock
0.8 lacks, this thin subclass adds (read kmock's source in the venv to see the base):

- resourceVersions: one counter for the whole API, stamped on every change, returned by
  lists; with ``uid`` and ``creationTimestamp`` on create;
- watches that resume from a resourceVersion, end after ``timeoutSeconds``, and answer
  ``410 Gone`` (an ERROR event) once ``compact()`` dropped the history they need;
- equality-based label selectors (``a=b``, ``a!=b``, ``a``, ``!a``) on lists and watches;
- Job deletion that deletes the Job's pods (what the garbage collector does);
- pod logs (``GET .../pods/NAME/log`` with ``follow``, ``tailLines`` and ``limitBytes``, as
  the kubelet serves them through the API server: 400 while the container waits to start,
  a followed log streamed in chunks until the container ends or the pod is deleted), whose
  text a test writes with ``write_log`` (the emulated containers print nothing).

There is no scheduler, kubelet or job controller: ``JobController`` plays the job
controller (creating Pods, patching Job status), driven step by step by a test or, with
``auto=True``, as a loop for the end-to-end tests, which run this module as a process::

    python -m tests.spoke.kmockapi --nodes FILE.json --ready-file FILE.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import signal
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import kmock
import yaml

Obj = dict[str, Any]


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def matches(selector: str | None, labels: Mapping[str, str]) -> bool:
    """Equality-based label selectors, as the API server reads them."""
    for term in (selector or "").split(","):
        term = term.strip()
        if not term:
            continue
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif " in " in term or " notin " in term:
            raise kmock.KubernetesError(status=400, reason="BadRequest",
                                        message="set-based selectors are not emulated")
        elif term not in labels:
            return False
    return True


_REVISIONS = itertools.count(1)  # process-wide, like one etcd behind every server

@attrs.define(kw_only=True)
class KubeApi(kmock.KubernetesEmulator):
    # resourceVersions are etcd revisions: they never go back, even when the API server
    # restarts. Each emulated server starts a fresh million past the last one, so a client
    # that resumes a watch from its old resourceVersion on a "restarted" server never waits
    # for revisions that were already spent (a counter reset here once lost events).
    _rv: int = attrs.field(factory=lambda: next(_REVISIONS) * 1_000_000, init=False)
    _history: list[tuple[int, Any, Obj]] = attrs.field(factory=list, init=False)
    _compacted: int = attrs.field(default=0, init=False)
    down: bool = attrs.field(default=False, init=False)  # see ``outage``
    _generation: int = attrs.field(default=0, init=False)  # bumped to end every watch
    _cond: asyncio.Condition | None = attrs.field(default=None, init=False)
    pod_logs: dict[tuple[str, str], bytearray] = attrs.field(factory=dict, init=False)

    # ---- state changes -----------------------------------------------------------------

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def _record(self, resource: Any, kind: str, obj: Obj) -> None:
        self._rv += 1
        obj = json.loads(json.dumps(obj))
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        self._history.append((self._rv, resource, {"type": kind, "object": obj}))
        async with self._condition():
            self._condition().notify_all()

    def _find(self, resource: Any, namespace: str | None, name: str | None) -> Any:
        for (res, ns, nm), obj in self._objects.items():
            if res == resource and ns == namespace and nm == name and not obj.deleted:
                return obj
        return None

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self.down:  # an outage: every call fails, as with an API server restarting
            return aiohttp.web.Response(status=503, text="the emulated API server is down")
        res, action = request.resource, request.action
        if res is not None and res.plural == "pods" and request.subresource == "log":
            return await serve_pod_log(self, request)
        if res is None or action not in (kmock.action.CREATE, kmock.action.UPDATE,
                                         kmock.action.DELETE):
            return await super()._handle(request)
        stamp = str(self._rv + 1)
        name = request.name
        ns = request.namespace
        if action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion=stamp)
            name, ns = meta.get("name"), ns or meta.get("namespace")
            if ns:
                meta["namespace"] = ns
        elif action == kmock.action.UPDATE and isinstance(request.data, dict):
            request.data.setdefault("metadata", {})["resourceVersion"] = stamp
        before = self._find(res, ns, name)
        last = before.raw if before is not None else None
        if action == kmock.action.DELETE and before is not None and res.plural == "jobs":
            await self._delete_dependents(last)
        response = await super()._handle(request)
        after = self._find(res, ns, name)
        if action == kmock.action.CREATE and after is not None and before is None:
            await self._record(res, "ADDED", after.raw)
        elif action == kmock.action.UPDATE and after is not None:
            await self._record(res, "MODIFIED", after.raw)
        elif action == kmock.action.DELETE and before is not None and after is None:
            await self._record(res, "DELETED", last or {})
        return response

    async def _delete_dependents(self, owner: Obj | None) -> None:
        uid = ((owner or {}).get("metadata") or {}).get("uid")
        for (res, _ns, _nm), obj in list(self._objects.items()):
            if obj.deleted or res.plural != "pods":
                continue
            refs = (obj.raw.get("metadata") or {}).get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                raw = obj.raw
                obj.delete()
                await self._record(res, "DELETED", raw)

    # ---- reads -------------------------------------------------------------------------

    def _select(self, request: kmock.Request) -> list[Obj]:
        if request.params.get("fieldSelector"):
            raise kmock.KubernetesError(status=400, reason="BadRequest",
                                        message="field selectors are not emulated")
        out = []
        for (res, ns, _nm), obj in self._objects.items():
            if obj.deleted or res != request.resource:
                continue
            if request.namespace is not None and ns != request.namespace:
                continue
            raw = obj.raw
            if matches(request.params.get("labelSelector"),
                       (raw.get("metadata") or {}).get("labels") or {}):
                out.append(raw)
        return out

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        return {"kind": "List", "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._rv)}, "items": self._select(request)}

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        yield b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(request.params.get("timeoutSeconds") or 1800)
        generation = self._generation
        since = request.params.get("resourceVersion") or "0"
        if since == "0":
            pos = self._rv
            for raw in self._select(request):
                yield {"type": "ADDED", "object": raw}
        else:
            pos = int(since)
            if pos < self._compacted:
                yield {"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                    "reason": "Expired", "message": f"too old resource version: {pos}"}}
                return
        selector = request.params.get("labelSelector")
        while generation == self._generation:
            for rv, res, event in [h for h in self._history if h[0] > pos]:
                pos = rv
                obj = event["object"]
                meta = obj.get("metadata") or {}
                if res != request.resource:
                    continue
                if request.namespace is not None and meta.get("namespace") != request.namespace:
                    continue
                if matches(selector, meta.get("labels") or {}):
                    yield event
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            cond = self._condition()
            async with cond:
                if self._history and self._history[-1][0] > pos:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cond.wait(), timeout=min(remaining, 1.0))

    # ---- for tests -----------------------------------------------------------------------

    def compact(self) -> None:
        """Forget the event history (as etcd compaction does) and end every open watch:
        a watch resumed from an older resourceVersion now gets 410 Gone."""
        self._compacted = self._rv + 1
        self._history.clear()
        self._generation += 1

    def outage(self, down: bool) -> None:
        """Take the API down (open watches end, every request gets 503) or bring it back,
        without giving up the listening socket: rebinding a just-freed port is racy."""
        self.down = down
        if down:
            self.end_watches()

    def end_watches(self) -> None:
        """End every open watch (as an API server restart would); clients resume them."""
        self._generation += 1

    async def write_log(self, namespace: str, pod: str, text: str) -> None:
        """What the pod's container printed (appended to its log)."""
        self.pod_logs.setdefault((namespace, pod), bytearray()).extend(text.encode())
        async with self._condition():
            self._condition().notify_all()

    def stored(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        for (res, ns, nm), obj in self._objects.items():
            if res.plural == plural and ns == namespace and nm == name and not obj.deleted:
                return dict(obj.raw)
        return None

    def stored_all(self, plural: str) -> list[Obj]:
        return [dict(obj.raw) for (res, _ns, _nm), obj in self._objects.items()
                if res.plural == plural and not obj.deleted]


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                      "code": code, "reason": reason, "message": message},
                                     status=code)


async def serve_pod_log(api: KubeApi, request: kmock.Request) -> aiohttp.web.StreamResponse:
    """``GET /api/v1/namespaces/NS/pods/NAME/log``: the pod's log as text, whole or the
    last ``tailLines`` lines, cut at ``limitBytes``; with ``follow=true``, chunked, until the
    container has ended (the pod Succeeded or Failed) or the pod is gone."""
    ns, name = request.namespace or "", request.name or ""

    def pod() -> Obj | None:
        obj = api._find(request.resource, ns, name)
        return None if obj is None else dict(obj.raw)

    def ended(p: Obj | None) -> bool:
        return p is None or (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")

    p = pod()
    if p is None:
        return _status(404, "NotFound", f'pods "{name}" not found')
    for cs in (p.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return _status(400, "BadRequest", f'container "{cs.get("name", "slice")}" in pod '
                           f'"{name}" is waiting to start: {waiting.get("reason")}')
    params = request.params
    buf = api.pod_logs.setdefault((ns, name), bytearray())
    start = 0
    if params.get("tailLines") is not None:
        lines = bytes(buf).splitlines(keepends=True)
        keep = lines[len(lines) - int(params["tailLines"]):] if int(params["tailLines"]) else []
        start = len(buf) - sum(len(x) for x in keep)
    limit = int(params["limitBytes"]) if params.get("limitBytes") else None
    if params.get("follow") != "true":
        body = bytes(buf[start:])
        return aiohttp.web.Response(body=body[:limit] if limit else body,
                                    content_type="text/plain")
    raw = request._raw_request
    assert raw is not None
    resp = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
    resp.enable_chunked_encoding()
    await resp.prepare(raw)
    pos, cond = start, api._condition()
    while True:
        done = ended(pod())  # before reading: what was written before the end is sent
        if len(buf) > pos:
            await resp.write(bytes(buf[pos:]))
            pos = len(buf)
        if done:
            break
        async with cond:
            if len(buf) == pos and not ended(pod()):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cond.wait(), timeout=1.0)
    await resp.write_eof()
    return resp


# ---- objects ---------------------------------------------------------------------------


def gpu_node(name: str, *, gpus: int = 8, product: str | None = "NVIDIA-H100-80GB-HBM3",
             memory_mib: int = 81559, ready: bool = True, cordoned: bool = False,
             resource: str = "nvidia.com/gpu", region: str | None = None,
             zone: str | None = None) -> Obj:
    labels: dict[str, str] = {"kubernetes.io/hostname": name}
    if product:
        labels.update({"nvidia.com/gpu.product": product,
                       "nvidia.com/gpu.memory": str(memory_mib),
                       "nvidia.com/gpu.count": str(gpus)})
    if region:
        labels["topology.kubernetes.io/region"] = region
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    alloc = {"cpu": "32", "memory": "256Gi"}
    if gpus:
        alloc[resource] = str(gpus)
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "spec": {"unschedulable": True} if cordoned else {},
            "status": {"allocatable": alloc, "capacity": alloc,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def tenant_pod(name: str, node: str, gpus: int, *, namespace: str = "other",
               phase: str = "Running") -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{
                "name": "main", "image": "busybox",
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": phase}}


def container_status(state: Obj, *, image: str = "emulated", ready: bool = False) -> Obj:
    """A status of the slice's container, with the fields the client's models require."""
    return {"name": "slice", "ready": ready, "restartCount": 0, "image": image,
            "imageID": f"{image}@sha256:{'0' * 64}", "state": state}


# ---- the job controller ----------------------------------------------------------------


class JobController:
    """Plays kube-controller-manager's job controller (and the kubelet) over real HTTP."""

    def __init__(self, client: aiohttp.ClientSession, namespace: str,
                 api: KubeApi | None = None) -> None:
        self.http = client
        self.ns = namespace
        self.api = api  # when given, each pod it starts prints a line (its log)

    async def _json(self, method: str, path: str, body: Obj | None = None) -> Obj:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self.http.request(method, path, json=body, headers=headers) as r:
            r.raise_for_status()
            return await r.json()  # type: ignore[no-any-return]

    async def jobs(self) -> list[Obj]:
        data = await self._json("GET", f"/apis/batch/v1/namespaces/{self.ns}/jobs")
        return list(data["items"])

    async def pods(self) -> list[Obj]:
        data = await self._json("GET", f"/api/v1/namespaces/{self.ns}/pods")
        return list(data["items"])

    async def create(self, path: str, body: Obj) -> Obj:
        return await self._json("POST", path, body)

    async def patch(self, path: str, body: Obj) -> Obj:
        return await self._json("PATCH", path, body)

    async def delete(self, path: str) -> None:
        async with self.http.delete(path) as r:
            if r.status != 404:
                r.raise_for_status()

    @staticmethod
    def node_of(job: Obj) -> str | None:
        terms = (job["spec"]["template"]["spec"].get("affinity", {}).get("nodeAffinity", {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution", {})
                 .get("nodeSelectorTerms", []))
        for t in terms:
            for f in t.get("matchFields", []):
                if f.get("key") == "metadata.name":
                    return str(f["values"][0])
        return None

    async def start_pod(self, job: Obj, *, phase: str = "Running", bind: bool = True,
                        waiting: str | None = None, unschedulable: str | None = None) -> Obj:
        """The Job's pod, as the job controller, scheduler and kubelet would leave it."""
        name = job["metadata"]["name"]
        tpl = job["spec"]["template"]
        spec = json.loads(json.dumps(tpl["spec"]))
        if bind:
            spec["nodeName"] = self.node_of(job)
        status: Obj = {"phase": phase, "startTime": _now()}
        if waiting:
            status["containerStatuses"] = [container_status(
                {"waiting": {"reason": waiting, "message": f"emulated {waiting}"}})]
        elif phase == "Running":
            status["containerStatuses"] = [container_status(
                {"running": {"startedAt": _now()}}, ready=True)]
        if unschedulable:
            status["conditions"] = [{"type": "PodScheduled", "status": "False",
                                     "reason": "Unschedulable", "message": unschedulable}]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{name}-x1y2z", "namespace": self.ns,
                            "labels": {**tpl["metadata"].get("labels", {}), "job-name": name},
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                                 "name": name, "controller": True,
                                                 "uid": job["metadata"]["uid"]}]},
               "spec": spec, "status": status}
        created = await self.create(f"/api/v1/namespaces/{self.ns}/pods", pod)
        if self.api is not None and phase == "Running":
            await self.api.write_log(self.ns, pod["metadata"]["name"],
                                     f"emulated container of {name} on {spec.get('nodeName')}\n")
        await self.patch(f"/apis/batch/v1/namespaces/{self.ns}/jobs/{name}/status",
                         {"status": {"startTime": _now(), "active": 1}})
        return created

    async def finish(self, job_name: str, exit_code: int, reason: str | None = None) -> None:
        """The container exits with ``exit_code``; the job controller records it."""
        pod_name = f"{job_name}-x1y2z"
        phase = "Succeeded" if exit_code == 0 else "Failed"
        term = {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0
                                                             else "Error"),
                "finishedAt": _now()}
        await self.patch(f"/api/v1/namespaces/{self.ns}/pods/{pod_name}/status", {
            "status": {"phase": phase, "containerStatuses": [
                container_status({"terminated": term})]}})
        cond = {"type": "Complete" if exit_code == 0 else "Failed", "status": "True",
                "reason": None if exit_code == 0 else "BackoffLimitExceeded"}
        await self.patch(f"/apis/batch/v1/namespaces/{self.ns}/jobs/{job_name}/status", {
            "status": {"active": 0, "succeeded": int(exit_code == 0),
                       "failed": int(exit_code != 0), "conditions": [cond]}})

    async def expire(self, job: Obj) -> None:
        """activeDeadlineSeconds ran out: the job controller fails the Job, deletes its pod."""
        name = job["metadata"]["name"]
        await self.patch(f"/apis/batch/v1/namespaces/{self.ns}/jobs/{name}/status", {
            "status": {"active": 0, "failed": 1, "conditions": [{
                "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline"}]}})
        await self.delete(f"/api/v1/namespaces/{self.ns}/pods/{name}-x1y2z")

    async def run(self, period: float = 0.1) -> None:
        """The end-to-end tests' controller: a pod for every new Job, Running at once; a
        Job past its activeDeadlineSeconds expires. Finishing is the test's to decide."""
        started: set[str] = set()
        while True:
            for job in await self.jobs():
                name = job["metadata"]["name"]
                st = job.get("status") or {}
                if name not in started and not st.get("conditions"):
                    started.add(name)
                    await self.start_pod(job)
                    continue
                begun = st.get("startTime")
                ads = job["spec"].get("activeDeadlineSeconds")
                if begun and ads and not st.get("conditions"):
                    t0 = datetime.datetime.fromisoformat(begun.replace("Z", "+00:00"))
                    age = (datetime.datetime.now(tz=datetime.UTC) - t0).total_seconds()
                    if age > ads:
                        await self.expire(job)
            await asyncio.sleep(period)  # a controller's resync, not test synchronisation


def write_kubeconfig(path: Path, url: str, *, context: str = "emulated") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "default",
        "clusters": [{"name": context, "cluster": {"server": url}},
                     {"name": "unused", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "tester", "user": {"token": "emulated"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": "tester"}},
                     {"name": "default", "context": {"cluster": "unused", "user": "tester"}}],
    }))
    return path


# ---- as a process (end-to-end tests) -----------------------------------------------------


async def _serve(nodes: list[Obj], tenants: list[Obj], namespace: str, ready: Path) -> None:
    async with KubeApi() as api, kmock.Server(api) as srv:
        ctl = JobController(srv.client, namespace, api)
        for n in nodes:
            await ctl.create("/api/v1/nodes", n)
        for p in tenants:
            await ctl.create(f"/api/v1/namespaces/{p['metadata']['namespace']}/pods", p)
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": str(srv.url).rstrip("/")}))
        tmp.replace(ready)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        runner = asyncio.create_task(ctl.run())
        await stop.wait()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nodes", type=Path, required=True, help="JSON: nodes and tenant pods")
    p.add_argument("--ready-file", type=Path, required=True)
    p.add_argument("--namespace", default="orrery")
    args = p.parse_args()
    spec = json.loads(args.nodes.read_text())
    asyncio.run(_serve(spec["nodes"], spec.get("tenants", []), args.namespace, args.ready_file))


if __name__ == "__main__":
    main()
