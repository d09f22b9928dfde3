"""Pagination of events, attempts and audit rows (``limit`` and an id cursor), and the
retention that prunes the events and audit rows of long-finished jobs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlmodel import col, select

from orrery.manifest import parse_manifest
from orrery_hub.main import Hub
from orrery_hub.store import Database
from orrery_hub.store import jobs as jobstore
from orrery_hub.store.models import AttemptRow, AuditRow, EventRow, JobRow
from orrery_hub.store.retention import prune
from tests.conftest import ADMIN

JOB = "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: %s}\nspec: {command: [x]}\n"
DAY = 86400.0


def _job(s: object, name: str, now: float, tmp: Path) -> JobRow:
    return jobstore.submit(s, parse_manifest(JOB % name), now=now, checkpoint_root=tmp)  # type: ignore[arg-type]


@pytest.fixture
async def api(hub: Hub) -> httpx.AsyncClient:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as c:
        yield c  # type: ignore[misc]


async def test_events_attempts_and_audit_page_by_id(api: httpx.AsyncClient, hub: Hub) -> None:
    r = await api.post("/v1/jobs", content=JOB % "paged")
    assert r.status_code == 201
    job = r.json()["id"]

    def fill(s: object) -> None:
        for i in range(25):
            jobstore.add_event(s, at=float(i), kind="Note", job_id=job, message=f"e{i}")  # type: ignore[arg-type]
            s.add(  # type: ignore[attr-defined]
                AttemptRow(job_id=job, index=0, epoch=i, cluster="c", node="n", assigned_at=i)
            )

    await hub.store.tx(fill)
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 10, **({"after": after} if after is not None else {})}
        page = (await api.get(f"/v1/jobs/{job}/events", params=params)).json()
        if not page:
            break
        assert len(page) <= 10
        seen += [e["message"] for e in page]
        after = page[-1]["id"]
    assert seen[0].startswith("1 slice") and seen[1:] == [f"e{i}" for i in range(25)]

    first = (await api.get(f"/v1/jobs/{job}/attempts", params={"limit": 20})).json()
    rest = (await api.get(f"/v1/jobs/{job}/attempts", params={"after": first[-1]["id"]})).json()
    assert [a["epoch"] for a in first + rest] == list(range(25))

    newest = (await api.get("/v1/audit", params={"limit": 1})).json()
    assert len(newest) == 1 and newest[0]["job"] == job
    older = (await api.get("/v1/audit", params={"before": newest[0]["id"]})).json()
    assert all(a["id"] < newest[0]["id"] for a in older)

    for bad in ({"limit": 0}, {"limit": 10**6}, {"after": -1}, {"after": 2**70}):
        r = await api.get(f"/v1/jobs/{job}/events", params=bad)
        assert r.status_code == 422, (bad, r.text)


def test_retention_prunes_only_long_finished_jobs(tmp_path: Path) -> None:
    db = Database.connect(f"sqlite:///{tmp_path / 'hub.db'}")
    now = 100 * DAY
    with db.session() as s:
        old = _job(s, "old", now - 40 * DAY, tmp_path)
        recent = _job(s, "recent", now - 40 * DAY, tmp_path)
        running = _job(s, "running", now - 40 * DAY, tmp_path)
        old.phase, old.finished_at = "Succeeded", now - 31 * DAY
        recent.phase, recent.finished_at = "Failed", now - 2 * DAY
        for j in (old, recent, running):
            s.add(j)
            s.add(
                AuditRow(
                    at=now - 40 * DAY,
                    kind="admit",
                    job_id=j.id,
                    decision="admitted",
                    detail="",
                    policies=[],
                    digest="",
                )
            )
        jobstore.add_event(s, at=now - 40 * DAY, kind="ClusterJoined", message="c joined")
        jobstore.add_event(s, at=now - DAY, kind="ClusterJoined", message="d joined")
        ids = (old.id, recent.id, running.id)
    with db.session() as s:
        pruned = prune(s, now=now, keep_s=30 * DAY)
    assert (pruned.jobs, pruned.audit) == (1, 1)
    with db.session() as s:
        by_job = {
            jid: [e.kind for e in s.exec(select(EventRow).where(EventRow.job_id == jid))]
            for jid in ids
        }
        assert by_job[ids[0]] == []
        assert by_job[ids[1]] and by_job[ids[2]]
        audits = {a.job_id for a in s.exec(select(AuditRow))}
        assert audits == {ids[1], ids[2]}
        cluster_events = [
            e.message for e in s.exec(select(EventRow).where(col(EventRow.job_id).is_(None)))
        ]
        assert cluster_events == ["d joined"]
        assert s.exec(select(JobRow).where(JobRow.id == ids[0])).one().phase == "Succeeded"
    with db.session() as s:
        again = prune(s, now=now, keep_s=30 * DAY)
    assert (again.jobs, again.events, again.audit) == (0, 0, 0)
