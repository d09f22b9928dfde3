"""Hostile and absurd input at the hub's edges (issue 10): each refused with a clear 4xx or
dropped with a counter, and none able to stall a scheduling pass or a batch of orders."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from orrery.errors import ManifestError, TooLarge
from orrery.ids import ClusterName, JobId, NodeName, SliceIndex
from orrery.manifest import parse_manifest
from orrery.wire import Assignment, Kill
from orrery.wire.codec import MAX_ORDER_BYTES
from orrery_hub.admission.deliverable import check_deliverable
from orrery_hub.api.limits import MAX_BODY, BodyLimit
from orrery_hub.apply.applier import Applier
from orrery_hub.apply.jobdb import JobDb
from orrery_hub.main import Hub
from orrery_hub.policy import EMPTY
from orrery_hub.scheduler import Plan, SlicePlacement
from orrery_hub.store import Database
from orrery_hub.store import jobs as jobstore
from orrery_hub.store.models import EventRow, JobRow, SliceRow
from tests.conftest import ADMIN

JOB = "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: %s}\nspec: {command: [x]%s}\n"


@pytest.fixture
async def api(hub: Hub) -> httpx.AsyncClient:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, timeout=30, headers=ADMIN) as c:
        yield c  # type: ignore[misc]


def _yaml(extra: str = "", name: str = "j") -> str:
    return JOB % (name, extra)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan", "inf", "1e400"])
async def test_non_finite_max_runtime_is_a_422_naming_the_field(
    api: httpx.AsyncClient, value: str
) -> None:
    r = await api.post("/v1/jobs", content=_yaml(f", maxRuntime: {value}"))
    assert r.status_code == 422, r.text
    assert r.json()["fields"][0]["field"] == "spec.maxRuntime"
    assert "finite" in r.json()["fields"][0]["reason"]


async def test_deep_json_and_yaml_are_a_422_not_a_500(api: httpx.AsyncClient) -> None:
    for body in (
        "[" * 50_000 + "]" * 50_000,
        "a:\n" + "".join(" " * i + "- \n" for i in range(1000)),
    ):
        r = await api.post("/v1/jobs", content=body)
        assert r.status_code == 422, r.text[:200]
        assert "nested" in r.text or "not valid YAML" in r.text
    r = await api.post("/v1/policies:check", content="[" * 50_000 + "]" * 50_000)
    assert r.status_code == 422


async def test_a_yaml_alias_bomb_is_refused(api: httpx.AsyncClient) -> None:
    # 10 levels of 10 aliases each: about 1 KB of text, 10**10 nodes expanded.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    body = "\n".join(lines) + "\n" + _yaml(", env: {A: '1'}, image: *a9").split("\n", 1)[1]
    assert len(body) < 2048
    r = await api.post("/v1/jobs", content=body)
    assert r.status_code in (413, 422), r.text
    assert "expands to more than" in r.json()["detail"]


async def test_a_huge_declared_body_is_refused_before_it_is_read(api: httpx.AsyncClient) -> None:
    # Content-Length says 400 MB; the hub answers 413 at once, without waiting for it.
    hub_url = str(api.base_url)
    host, port = hub_url.split("//")[1].rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/jobs HTTP/1.1\r\nhost: x\r\ncontent-type: application/yaml\r\n"
        b"content-length: 400000000\r\n\r\n" + b"x" * 1024
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    assert head.startswith(b"HTTP/1.1 413"), head
    writer.close()


async def test_a_chunked_body_is_refused_past_the_limit(api: httpx.AsyncClient) -> None:
    # No Content-Length: the hub counts as the body streams in, answers 413 once it passes
    # the limit and closes the connection; it never reads the 400 MB the client offers.
    host, port = str(api.base_url).split("//")[1].rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/jobs HTTP/1.1\r\nhost: x\r\ncontent-type: application/yaml\r\n"
        b"authorization: " + ADMIN["Authorization"].encode() + b"\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (1024 * 1024, b"#" * (1024 * 1024))
    sent = 0

    async def push() -> None:
        nonlocal sent
        for _ in range(400):
            writer.write(chunk)
            await writer.drain()
            sent += 1

    pusher = asyncio.create_task(push())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=20)
        assert head.startswith(b"HTTP/1.1 413"), head
    except ConnectionResetError:
        pass  # the reset of a hung-up connection may overtake its 413 (asserted below)
    with pytest.raises((ConnectionError, OSError)):
        await asyncio.wait_for(pusher, timeout=20)  # the hub hung up
    assert sent < 64  # what the kernel's buffers took, at most: not 400 MB
    writer.close()


async def test_body_limit_stops_reading_the_stream() -> None:
    """ASGI level: the middleware pulls no more than the limit (plus one chunk) from the
    client, and answers 413 — memory stays bounded whatever the client sends."""
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def send(message: Any) -> None:
        sent.append(message)

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        while True:  # a route that reads the whole body
            await rcv()

    limit = BodyLimit(app, max_bytes=MAX_BODY)
    await limit({"type": "http", "headers": []}, receive, send)
    assert pulled == MAX_BODY // 65536 + 1
    assert sent[0]["status"] == 413
    assert isinstance(TooLarge("x"), ManifestError.__mro__[1])  # a 4xx family member


async def test_an_assignment_too_large_to_send_is_a_422_at_submit(
    api: httpx.AsyncClient,
) -> None:
    # 800 KB of YAML whose values each JSON-encode to six bytes (\u0001): every field
    # within its limit, the body within 1 MiB, but the order would be 1.2 MB.
    value = "\\x01" * 25_000
    env = ", ".join(f'V{i}: "{value}"' for i in range(8))
    r = await api.post("/v1/jobs", content=_yaml(f", env: {{{env}}}", "big"))
    assert r.status_code == 422, r.text[:300]
    assert r.json()["fields"][0]["field"] == "spec"
    assert "NATS" in r.json()["detail"]
    assert (await api.get("/v1/jobs")).json()["items"] == []


async def test_aliases_cannot_grow_a_small_body_past_the_limits(api: httpx.AsyncClient) -> None:
    # The 20 KB manifest whose aliases expand to 1.2 MB.
    body = (
        's: &s "'
        + "v" * 30_000
        + '"\n'
        + _yaml(", env: {A: *s}", "big").replace(
            "command: [x]", "command: [" + ", ".join(["*s"] * 40) + "]"
        )
    )
    assert len(body) < 40_000
    r = await api.post("/v1/jobs", content=body)
    assert r.status_code == 422, r.text[:300]
    assert "expands to more than" in r.json()["detail"]


def test_the_largest_assignment_of_a_fitting_job_fits_a_nats_message() -> None:
    fits = parse_manifest(_yaml(", env: {A: '%s'}" % ("v" * 30_000)))
    assert 30_000 < check_deliverable(fits) <= MAX_ORDER_BYTES
    env = {f"K{i}": "v" * 32_000 for i in range(40)}
    too_big = fits.model_copy(update={"spec": fits.spec.model_copy(update={"env": env})})
    with pytest.raises(ManifestError, match="NATS message"):
        check_deliverable(too_big)


def test_a_remembered_shape_answers_exactly_what_measuring_would() -> None:
    """Jobs of one shape share one measurement; a name counts by its length, and any
    other field that changes is measured afresh."""
    from orrery.wire import encode
    from orrery_hub.admission.deliverable import largest_assignment

    env = ", env: {A: '%s'}" % ("v" * 1000)
    jobs = [parse_manifest(_yaml(env, name)) for name in ("aa", "bb", "ccc", "ccc")]
    jobs.append(jobs[0].model_copy(update={"spec": jobs[0].spec.model_copy(update={"env": {}})}))
    for m in jobs:
        assert check_deliverable(m) == len(encode(largest_assignment(m)))
    assert check_deliverable(jobs[2]) == check_deliverable(jobs[0]) + 1
    assert check_deliverable(jobs[4]) < check_deliverable(jobs[0]) - 1000
    long_env = {f"K{i}": "v" * 32_000 for i in range(40)}
    too_big = jobs[0].model_copy(update={"spec": jobs[0].spec.model_copy(update={"env": long_env})})
    for _ in range(2):  # refused each time, from memory the second
        with pytest.raises(ManifestError, match="NATS message"):
            check_deliverable(too_big)
    assert check_deliverable(jobs[1]) == check_deliverable(jobs[0])


# ---- one bad job never fails a pass ------------------------------------------------------


def _placement(job: str, index: int = 0) -> SlicePlacement:
    return SlicePlacement(JobId(job), SliceIndex(index), ClusterName("c"), NodeName("n0"), (index,))


def test_commit_isolates_a_job_that_cannot_be_written(tmp_path: Path) -> None:
    db = Database.connect(f"sqlite:///{tmp_path / 'hub.db'}")
    with db.session() as s:
        good = jobstore.submit(
            s, parse_manifest(_yaml("", "good")), now=1, checkpoint_root=tmp_path
        )
        bad = jobstore.submit(s, parse_manifest(_yaml("", "bad")), now=1, checkpoint_root=tmp_path)
        # Stored before today's limits: a maxRuntime the wire refuses.
        bad.manifest = {**bad.manifest, "spec": {**bad.manifest["spec"], "maxRuntime": "nan"}}
        s.add(bad)
        ids, versions = (good.id, bad.id), {good.id: good.version, bad.id: bad.version}
    applier = Applier()
    plan = Plan(placements=(_placement(ids[1]), _placement(ids[0])), waiting={})
    with db.session() as s:
        orders = applier.commit(
            s, plan, versions=versions, addresses={}, gpu_types={}, now=2, digest=""
        )
    assert [o.job for _, o in orders] == [ids[0]]
    with db.session() as s:
        rows = {j.id: j for j in s.exec(select(JobRow))}
        assert rows[ids[1]].phase == "Failed"
        assert "could not be placed" in (rows[ids[1]].reason or "")
        assert s.get(SliceRow, (ids[1], 0)).phase == "Failed"  # type: ignore[union-attr]
        assert s.get(SliceRow, (ids[0], 0)).phase == "Assigned"  # type: ignore[union-attr]
        kinds = [e.kind for e in s.exec(select(EventRow).where(EventRow.job_id == ids[1]))]
        assert kinds[-1] == "Failed"


def test_a_stored_job_whose_manifest_no_longer_loads_is_failed_not_offered(
    tmp_path: Path,
) -> None:
    db = Database.connect(f"sqlite:///{tmp_path / 'hub.db'}")
    with db.session() as s:
        good = jobstore.submit(
            s, parse_manifest(_yaml("", "good")), now=1, checkpoint_root=tmp_path
        )
        bad = jobstore.submit(s, parse_manifest(_yaml("", "bad")), now=1, checkpoint_root=tmp_path)
        bad.manifest = {**bad.manifest, "spec": {**bad.manifest["spec"], "maxRuntime": ".inf"}}
        s.add(bad)
        ids = (good.id, bad.id)
    # As the reconcile loop does: the job database (rebuilt from the store) names it
    # broken, the snapshot leaves it out, and the pass's commit fails it.
    jobs = JobDb()
    with db.session() as s:
        jobs.apply(jobs.load(s))
    assert set(jobs.broken) == {ids[1]}
    applier = Applier()
    g = applier.gather(jobs.entries(), now=2, policies=EMPTY, broken=jobs.broken)
    assert [r.id for r in g.requests] == [ids[0]]
    with db.session() as s:
        applier.fail_unplaceable(s, ids[1], jobs.broken[ids[1]], now=2)
    with db.session() as s:
        row = s.exec(select(JobRow).where(JobRow.id == ids[1])).one()
        assert row.phase == "Failed"
        assert "could not be placed" in (row.reason or "")


# ---- one failed publish never drops the rest ----------------------------------------------


class _FlakyNats:
    def __init__(self, fail_subject_of: str) -> None:
        self.fail = fail_subject_of
        self.published: list[str] = []

    async def publish(self, subject: str, data: bytes) -> None:
        if self.fail in subject:
            raise OSError("payload too large")
        self.published.append(subject)

    async def flush(self, timeout: float) -> None:
        return None


async def test_one_failed_publish_does_not_drop_the_rest(hub: Hub) -> None:
    flaky = _FlakyNats("cluster.a.")
    real, hub.nc = hub.nc, flaky  # type: ignore[assignment]
    try:
        kills: list[tuple[str, Assignment | Kill]] = [
            (c, Kill(sender="hub", seq=0, job="j", index=i, epoch=1))
            for i, c in enumerate(["a", "b", "a", "c"])
        ]
        await hub._publish(kills)
    finally:
        hub.nc = real
    assert [s.split(".")[3] for s in flaky.published] == ["b", "c"]


# ---- hostile reports: refused at decode, counted, never reaching SQLite ------------------


class _Msg:
    def __init__(self, subject: str, data: bytes) -> None:
        self.subject, self.data = subject, data
        self.responses: list[bytes] = []

    async def respond(self, data: bytes) -> None:
        self.responses.append(data)


async def test_an_epoch_past_int64_is_dropped_at_decode(hub: Hub) -> None:
    hb: dict[str, Any] = {
        "v": 1,
        "kind": "heartbeat",
        "sender": "spoke/x",
        "seq": 1,
        "cluster": "x",
        "incarnation": "i",
        "lease_s": 1.0,
        "slices": [{"job": "j", "index": 0, "epoch": 2**70, "phase": "Running"}],
    }
    before = hub.metrics.bad_messages._value.get()
    msg = _Msg("orrery.v1.cluster.x.report.heartbeat", json.dumps(hb).encode())
    await hub._on_report(msg)  # type: ignore[arg-type]
    assert hub.metrics.bad_messages._value.get() == before + 1
    assert msg.responses == []  # dropped: no ack, and nothing stored
    assert "x" not in hub.inventory.clusters
    # The same heartbeat with a sane epoch is taken.
    hb["slices"] = []
    ok = _Msg("orrery.v1.cluster.x.report.heartbeat", json.dumps(hb).encode())
    await hub._on_report(ok)  # type: ignore[arg-type]
    deadline = asyncio.get_running_loop().time() + 10
    while not (ok.responses and "x" in hub.inventory.clusters):
        assert asyncio.get_running_loop().time() < deadline, "the sane heartbeat was not taken"
        await asyncio.sleep(0.02)
    assert msg.responses == []
