"""Admission's writes through the driver (on PostgreSQL in one round trip,
``store.pipelined``; on SQLite ``store.sqlitebulk``): the rows are the rows SQLAlchemy's
statement-by-statement path writes, and on PostgreSQL a job id already taken rolls the
whole batch back and admits it again the checked way."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from orrery.errors import OrreryError
from orrery.manifest import manifest_from_data
from orrery_hub.admission.admit import Admitter
from orrery_hub.admission.answer import Admitted
from orrery_hub.admission.gate import PolicyGate
from orrery_hub.admission.groupcommit import Submission
from orrery_hub.apply.jobdb import JobDb
from orrery_hub.store import Database
from orrery_hub.store import jobs as jobstore
from orrery_hub.store.database import wrote

NOW = 1_800_000_000.0


def _manifest(name: str, **spec: Any) -> Any:
    data = {
        "apiVersion": "orrery/v1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "labels": {"team": "nlp", "x": "y"}},
        "spec": {"command": ["true"], "env": {"A": "1", "S": {"secretRef": "tok"}}, **spec},
    }
    return manifest_from_data(data, source=name)


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        url = request.getfixturevalue("fresh_pg_url")
    d = Database.connect(url)
    yield d
    d.close()


def _admit(
    db: Database,
    admitter: Admitter,
    names: list[str],
    *,
    pipeline: bool | None = None,
    driver: bool = True,
) -> tuple[list[Admitted | OrreryError], bool]:
    loop = asyncio.new_event_loop()
    try:
        sub = Submission([_manifest(n, slices=2) for n in names], NOW, loop.create_future())
        with db.session() as s:
            admitter.jobs.begin(s)
            if pipeline is None:
                [out] = admitter.admit(s, [sub], ())
            else:
                [out] = admitter._admit(s, [sub], (), pipeline=pipeline, driver=driver)
            admitter.jobs.apply(admitter.jobs.collect(s))
            did_write = wrote(s)
        return out, did_write
    finally:
        loop.close()


def _rows(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row, the job's id (random) and the row ids left out; JSON as stored."""
    queries = {
        "jobs": "SELECT name, queue, team, priority, CAST(labels AS TEXT), "
        "CAST(manifest AS TEXT), phase, reason, CAST(waiting AS TEXT), waiting IS NULL, "
        "created_at, restarts, checkpoint_dir IS NULL, version FROM jobs ORDER BY seq",
        "slices": 'SELECT "index", phase, epoch, CAST(gpus AS TEXT), attempts, failures, '
        "not_before, progress IS NULL, updated_at FROM slices ORDER BY job_id, \"index\"",
        "events": 'SELECT at, kind, message, "index" IS NULL FROM events ORDER BY id',
        "audit": "SELECT at, kind, job_id IS NULL, decision, detail, CAST(policies AS TEXT), "
        "digest FROM audit ORDER BY id",
    }
    with db.engine.connect() as c:
        return {t: [tuple(r) for r in c.execute(text(q))] for t, q in queries.items()}


def test_the_driver_writes_the_rows_sqlalchemy_writes(db: Database, tmp_path: Path) -> None:
    fast = Admitter(PolicyGate(None), JobDb(), tmp_path)
    out, did_write = _admit(db, fast, ["a", "b"])
    assert did_write  # the standby's fence sees a write it did not make through the ORM
    assert all(isinstance(o, Admitted) for o in out)
    fast_rows = _rows(db)
    assert [len(v) for v in fast_rows.values()] == [2, 4, 2, 2]
    with db.engine.begin() as c:
        for t in ("slices", "events", "audit", "jobs"):
            c.execute(text(f"DELETE FROM {t}"))
    checked = Admitter(PolicyGate(None), JobDb(), tmp_path)
    _admit(db, checked, ["a", "b"], pipeline=False, driver=False)
    assert _rows(db) == fast_rows
    # Both told the job database the same jobs, in the same order of submission.
    for jobs in (fast.jobs, checked.jobs):
        entries = sorted(jobs.entries(), key=lambda e: e.queued.seq)
        assert [(e.queued.name, len(e.slices)) for e in entries] == [("a", 2), ("b", 2)]


def test_a_taken_id_rolls_the_batch_back_and_admits_it_checked(
    fresh_pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL only: on SQLite ids are checked first (no round trip), none is refused.
    db = Database.connect(fresh_pg_url)
    admitter = Admitter(PolicyGate(None), JobDb(), tmp_path)
    # The first batch takes x-aaaaaa and y-000001; the second draws x-aaaaaa again
    # (unchecked: refused by the key), then, checked, x-bbbbbb.
    draws = itertools.chain(["aaaaaa", "000001", "aaaaaa", "000002", "bbbbbb", "000003"])
    monkeypatch.setattr(jobstore, "suffixes", lambda n: [next(draws) for _ in range(n)])
    first, _ = _admit(db, admitter, ["x", "y"])
    second, _ = _admit(db, admitter, ["x", "y"])
    assert [o.id for o in first if isinstance(o, Admitted)] == ["x-aaaaaa", "y-000001"]
    assert [o.id for o in second if isinstance(o, Admitted)] == ["x-bbbbbb", "y-000003"]
    rows = _rows(db)  # nothing of the refused attempt stayed
    assert [len(v) for v in rows.values()] == [4, 8, 4, 4]
    with db.engine.connect() as c:
        ids = [r[0] for r in c.execute(text("SELECT id FROM jobs ORDER BY seq"))]
    assert ids == ["x-aaaaaa", "y-000001", "x-bbbbbb", "y-000003"]
    assert sorted(e.id for e in admitter.jobs.entries()) == sorted(ids)
    db.close()


def test_fresh_ids_skip_those_the_store_holds_and_each_other(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.session() as s:
        s.execute(text("INSERT INTO jobs (id, name, queue, team, priority, labels, manifest, "
                       "phase, created_at, restarts, version, checkpoint_dir) VALUES "
                       "('x-aaaaaa', 'x', 'q', '', 0, '{}', '{}', 'Pending', 0, 0, 0, '/c')"))
    # x-aaaaaa is stored; the second x draws the first's id again, then one of its own.
    draws = iter(["aaaaaa", "bbbbbb", "bbbbbb", "cccccc", "dddddd"])
    monkeypatch.setattr(jobstore, "suffixes", lambda n: [next(draws) for _ in range(n)])
    with db.session() as s:
        assert jobstore.new_ids(s, ["x", "x"]) == ["x-cccccc", "x-bbbbbb"]


def test_the_job_database_holds_new_slices_as_the_rows_say(tmp_path: Path) -> None:
    # Shared entries for new slices (admit._pending_slices) match the rows written.
    db = Database.connect(f"sqlite:///{tmp_path / 'hub.db'}")
    admitter = Admitter(PolicyGate(None), JobDb(), tmp_path)
    _admit(db, admitter, ["a", "b"])
    with db.engine.connect() as c:
        rows = sorted(c.execute(text('SELECT job_id, "index", phase, epoch FROM slices')))
    held = sorted(
        (e.id, s.index, s.phase, s.epoch) for e in admitter.jobs.entries() for s in e.slices
    )
    assert held == [tuple(r) for r in rows] and len(held) == 4
    db.close()
