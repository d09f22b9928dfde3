"""Why a job waits: the summary in the store, written only when it changes; the reason
per cluster in the planning hub's memory, shown by the job view (``apply.waits``)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from sqlalchemy import event
from sqlmodel import select

from orrery.ids import ClusterName, JobId
from orrery.manifest import parse_manifest
from orrery.natsserver import NatsServer
from orrery_hub.apply.queued import Gathered
from orrery_hub.apply.waits import WaitBook
from orrery_hub.config.settings import HubSettings
from orrery_hub.policy import Usage
from orrery_hub.scheduler import Plan
from orrery_hub.scheduler.plan import WaitReason, WaitReasons
from orrery_hub.store import Database, queries
from orrery_hub.store import jobs as jobstore
from orrery_hub.store.models import JobRow
from tests.conftest import ADMIN, ADMIN_TOKEN, FAST, running_hub
from tests.hub.test_reconcile import Spoke

MANIFEST = """
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: wide}
spec: {slices: 3, gpusPerSlice: 8, restartPolicy: Gang, command: ["true"]}
"""
CLUSTERS = [ClusterName(f"c{i:04d}") for i in range(1000)]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database.connect(f"sqlite:///{tmp_path / 'hub.db'}")
    yield d
    d.close()


def submitted(db: Database, tmp_path: Path, n: int) -> list[str]:
    with db.session() as s:
        ids = [
            jobstore.submit(s, parse_manifest(MANIFEST), now=1.0, checkpoint_root=tmp_path).id
            for _ in range(n)
        ]
        s.commit()
    return ids


def gathered(ids: list[str]) -> Gathered:
    return Gathered((), dict.fromkeys(ids, 0), {}, {}, {}, Usage())


def reason(summary: str, text: str) -> WaitReason:
    return WaitReason(summary, {c: text for c in CLUSTERS})


class Updates:
    """UPDATE statements run on ``db``'s jobs table while counting."""

    def __init__(self, db: Database) -> None:
        self.n = 0
        event.listen(db.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cur: Any, stmt: str, *_: Any) -> None:
        if stmt.lstrip().upper().startswith("UPDATE JOBS"):
            self.n += 1


def test_only_changed_summaries_reach_the_store(db: Database, tmp_path: Path) -> None:
    ids = submitted(db, tmp_path, 3)
    book, updates = WaitBook(), Updates(db)
    first = reason("needs 3 slices × 8 GPU; largest fit: c0000 2 slice(s)", "2 of 3 slices fit")
    with db.session() as s:
        rows = book.record(s, Plan((), {JobId(j): first for j in ids}), gathered(ids))
        s.commit()
    assert rows == 3 and updates.n == 1  # one UPDATE per distinct summary
    with db.session() as s:
        stored = {r.id: (r.reason, r.waiting) for r in s.exec(select(JobRow))}
        view = book.describe(queries.get(s, ids[0]))
    # The store holds the summary only (not a thousand reasons per job) ...
    assert stored == dict.fromkeys(ids, (first.summary, {"": first.summary}))
    # ... and the view fills in the reason per cluster from memory.
    assert view.status.waiting is not None
    assert view.status.waiting.summary == first.summary
    assert view.status.waiting.clusters == {str(c): "2 of 3 slices fit" for c in CLUSTERS}

    # The next pass: a new reason object, the same summary, other per-cluster words.
    updates.n = 0
    second = reason(first.summary, "1 of 3 slices fit")
    with db.session() as s:
        rows = book.record(s, Plan((), {JobId(j): second for j in ids}), gathered(ids))
        s.commit()
        view = book.describe(queries.get(s, ids[1]))
    assert rows == 0 and updates.n == 0  # nothing written
    assert view.status.waiting is not None
    assert view.status.waiting.clusters[str(CLUSTERS[7])] == "1 of 3 slices fit"

    # One job's summary changes: one row written.
    other = reason("needs 3 slices × 8 GPU; no cluster has a slice's worth free", "full")
    waiting = {JobId(j): second for j in ids} | {JobId(ids[2]): other}
    with db.session() as s:
        rows = book.record(s, Plan((), waiting), gathered(ids))
        s.commit()
        assert s.exec(select(JobRow.reason).where(JobRow.id == ids[2])).one() == other.summary
    assert rows == 1 and updates.n == 1


def test_the_detail_is_the_latest_pass_s_and_none_for_a_job_it_did_not_list(
    db: Database, tmp_path: Path
) -> None:
    a, b, c = submitted(db, tmp_path, 3)
    book = WaitBook()
    first = reason("needs 3 slices × 8 GPU; no cluster has a slice's worth free", "full")
    book.note(Plan((), {JobId(j): first for j in (a, b, c)}), gathered([a, b, c]))
    assert book.clusters(a, first.summary) == first.clusters
    # The next pass: ``a`` has another reason, ``b`` is blocked by a policy (offered to no
    # cluster), ``c`` was placed meanwhile (forgotten).
    second = reason(first.summary, "2 of 3 slices fit")
    g = dataclasses.replace(gathered([a, b, c]), blocked={b: "retry backoff: 3.0s left"})
    book.forget(c)
    changed = book.note(Plan((), {JobId(a): second}), g)
    assert changed == {"retry backoff: 3.0s left": [b]}  # a's summary is the same
    assert book.clusters(a, first.summary) is second.clusters
    assert book.clusters(a, "another summary") is None  # not what the store holds
    assert book.clusters(b, "retry backoff: 3.0s left") is None
    assert book.clusters(c, first.summary) is None


def test_summaries_a_failed_transaction_lost_are_written_again(
    db: Database, tmp_path: Path
) -> None:
    ids = submitted(db, tmp_path, 2)
    book = WaitBook()
    first = reason("needs 3 slices × 8 GPU; no cluster has a slice's worth free", "full")
    plan_ = Plan((), {JobId(j): first for j in ids})
    lost = book.note(plan_, gathered(ids))  # the pass's worker thread
    assert lost == {first.summary: ids}
    book.unwritten(lost)  # ... and the store transaction that was to write them failed
    with db.session() as s:
        assert book.record(s, plan_, gathered(ids)) == 2
        s.commit()
        assert set(s.exec(select(JobRow.reason))) == {first.summary}


def test_a_blocked_job_says_why_with_no_detail(db: Database, tmp_path: Path) -> None:
    [job_id] = submitted(db, tmp_path, 1)
    book = WaitBook()
    g = dataclasses.replace(gathered([job_id]), blocked={job_id: "retry backoff: 3.0s left"})
    with db.session() as s:
        assert book.record(s, Plan((), {}), g) == 1
        s.commit()
        view = book.describe(queries.get(s, job_id))
    assert view.status.waiting is not None
    assert (view.status.waiting.summary, view.status.waiting.clusters) == (
        "retry backoff: 3.0s left", {},
    )


def test_a_restarted_hub_shows_the_summary_until_its_next_pass(
    db: Database, tmp_path: Path
) -> None:
    [job_id] = submitted(db, tmp_path, 1)
    first = reason("needs 3 slices × 8 GPU; no cluster has a slice's worth free", "full")
    with db.session() as s:
        WaitBook().record(s, Plan((), {JobId(job_id): first}), gathered([job_id]))
        s.commit()
    again = WaitBook()  # a restarted hub: nothing in memory yet
    with db.session() as s:
        view = again.describe(queries.get(s, job_id))
    assert view.status.waiting is not None
    assert (view.status.waiting.summary, view.status.waiting.clusters) == (first.summary, {})
    with db.session() as s:  # its first pass: the summary is written again, the detail back
        assert again.record(s, Plan((), {JobId(job_id): first}), gathered([job_id])) == 1
        s.commit()
        view = again.describe(queries.get(s, job_id))
    assert view.status.waiting is not None
    assert len(view.status.waiting.clusters) == len(CLUSTERS)


def hub_settings(tmp_path: Path, nats_server: NatsServer) -> HubSettings:
    return HubSettings(
        state_dir=tmp_path / "hub",
        nats_url=nats_server.url,
        port=0,
        timing=dataclasses.replace(FAST, failover_timeout_s=60.0),
        insecure=True,
        admin_token=ADMIN_TOKEN,
    )


async def test_the_job_view_shows_reasons_per_cluster_across_a_restart(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = hub_settings(tmp_path, nats_server)
    async with running_hub(settings) as hub:
        assert hub.endpoints is not None
        nc = await nats.connect(hub.endpoints.nats_url)
        async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as api:
            spoke = Spoke(nc, api)
            assert (await spoke.beat()).accepted  # 2 nodes × 8 GPUs: 2 of 3 slices fit
            job_id = await spoke.submit(MANIFEST)
            want = {spoke.name: "2 of 3 slices fit (16 of 16 GPU free)"}

            async def clusters() -> dict[str, str] | None:
                w = (await spoke.job(job_id))["status"]["waiting"]
                return None if w is None else dict(w["clusters"])

            for _ in range(200):
                if await clusters() == want:
                    break
                await asyncio.sleep(0.05)
            assert await clusters() == want
            row = await hub.store.tx(lambda s: queries.get_row(s, job_id))
            assert row.waiting is not None and set(row.waiting) == {""}  # summary alone
            summary = row.waiting[""]
        await nc.close()

    async with running_hub(settings) as hub:
        assert hub.endpoints is not None
        nc = await nats.connect(hub.endpoints.nats_url)
        async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as api:
            spoke.api, spoke.nc = api, nc
            # Right after the restart: the summary from the store, whatever the memory holds.
            w = (await spoke.job(job_id))["status"]["waiting"]
            assert w["summary"] == summary and w["clusters"] in ({}, want)
            await spoke.beat()
            for _ in range(200):
                if await clusters() == want:
                    break
                await asyncio.sleep(0.05)
            assert await clusters() == want
        await nc.close()


def test_summaries_are_written_through_the_id_index_and_skip_finished_jobs(
    db: Database, tmp_path: Path
) -> None:
    """Given a long id list and a phase condition, SQLite's planner took the phase index and
    scanned every waiting job per statement: a cost that grew with the queue."""
    ids = submitted(db, tmp_path, 600)
    with db.session() as s:
        done = s.exec(select(JobRow).where(JobRow.id == ids[5])).one()
        done.phase, done.reason = "Cancelled", "cancelled by user"
        s.add(done)
        s.commit()
    seen: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cur: Any, stmt: str, params: Any, *_: Any) -> None:
        if stmt.lstrip().upper().startswith("UPDATE JOBS"):
            seen.append((stmt, params))

    event.listen(db.engine, "before_cursor_execute", keep)
    why = reason("needs 3 slices × 8 GPU; no cluster has a slice's worth free", "full")
    with db.session() as s:
        assert WaitBook().record(s, Plan((), {JobId(j): why for j in ids}), gathered(ids)) == 600
        s.commit()
    event.remove(db.engine, "before_cursor_execute", keep)
    assert len(seen) == 2  # 500 ids, then 100
    with db.engine.connect() as c:
        for stmt, params in seen:
            plan = " ".join(str(r) for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + stmt, params))
            assert "ix_jobs_id" in plan and "ix_jobs_phase" not in plan, plan
    with db.session() as s:
        reasons = dict(s.exec(select(JobRow.id, JobRow.reason)).all())
    assert reasons.pop(ids[5]) == "cancelled by user"  # finished meanwhile: left alone
    assert set(reasons.values()) == {why.summary}


def test_reasons_told_a_group_at_once_are_noted_as_the_same_reasons_job_by_job(
    db: Database, tmp_path: Path
) -> None:
    ids = submitted(db, tmp_path, 5)
    first = reason("needs 3 slices × 8 GPU; no cluster has a slice's worth free", "full")
    other = reason("needs 3 slices × 8 GPU; largest fit: c0000 2 slice(s)", "2 of 3 fit")
    grouped = Plan((), WaitReasons({JobId(ids[0]): other},
                                   [(frozenset(map(JobId, ids[1:])), first)]))  # fmt: skip
    flat = Plan((), {JobId(ids[0]): other} | {JobId(j): first for j in ids[1:]})
    assert grouped.waiting == flat.waiting and len(grouped.waiting) == 5
    by_group, by_job = WaitBook(), WaitBook()
    got = by_group.note(grouped, gathered(ids))
    want = by_job.note(flat, gathered(ids))
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}
    assert sorted(got[first.summary]) == sorted(ids[1:]) and got[other.summary] == [ids[0]]
    assert by_group.clusters(ids[3], first.summary) is first.clusters
    # The next pass, the same reasons: nothing to write; one job's summary changed: it.
    assert by_group.note(grouped, gathered(ids)) == {}
    moved = Plan((), WaitReasons({}, [(frozenset(map(JobId, ids)), first)]))
    assert by_group.note(moved, gathered(ids)) == {first.summary: [ids[0]]}
    # A job placed (forgotten) and waiting again with the same reason: written again; and
    # so is one whose write was lost with its transaction.
    by_group.forget(ids[2])
    assert by_group.note(moved, gathered(ids)) == {first.summary: [ids[2]]}
    by_group.unwritten({first.summary: [ids[4]]})
    assert by_group.note(moved, gathered(ids)) == {first.summary: [ids[4]]}
    assert by_group.note(moved, gathered(ids)) == {}
