"""What admission's writes cost SQLite as the job table grows: the hub's own bulk insert
(``store.sqlitebulk.insert_admitted``: jobs, slices, events, audit) and commit, in
batches of 1,000 jobs with the hub's ids (``<name>-<6 hex>``, so each index takes them
at random places), on a database made with the hub's settings and on one made with
SQLite's defaults (4 KiB pages, a WAL checkpoint every 1,000 pages; its file cut back to
4 MB, which SQLite leaves as it is by default), in the same run; and
with the hub's settings again, as many jobs a transaction as group commit puts in one.

    .venv/bin/python -m pytest -m benchmark benchmarks/bench_store.py -s -p no:randomly
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from unittest import mock

import pytest

from benchmarks.conftest import record
from orrery.manifest import parse_manifest
from orrery_hub.admission.groupcommit import MAX_JOBS_PER_COMMIT
from orrery_hub.store import Database, database, sqlitebulk
from orrery_hub.store import jobs as jobstore
from orrery_hub.store.manifests import ManifestDumps

pytestmark = pytest.mark.benchmark

JOBS = int(os.environ.get("ORRERY_BENCH_STORE_JOBS", "80000"))
PER_BATCH = 1000  # one full POST /v1/jobs:batch request

MANIFEST = """
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: sweep, labels: {team: nlp}}
spec: {slices: 1, gpusPerSlice: 1, gpuType: H100, command: [python, train.py]}
"""


def _fill(db: Database, tmp: Path, per_batch: int = PER_BATCH) -> tuple[float, float]:
    """(insert, commit) µs a job over the last quarter of ``JOBS`` jobs, stored
    ``per_batch`` jobs a transaction."""
    m = parse_manifest(MANIFEST)
    names = [f"sweep-{i % PER_BATCH}" for i in range(per_batch)]  # a sweep: names re-used
    prefix = jobstore.checkpoint_prefix(tmp)
    batches = max(1, JOBS // per_batch)
    ins = com = 0.0
    for b in range(batches):
        with db.session() as s:
            dumps = ManifestDumps()
            ids = jobstore.new_ids(s, names)
            jobs = [
                jobstore.new_job(m.model_copy(update={"metadata": m.metadata.model_copy(
                    update={"name": n})}), job_id=j, now=float(b), checkpoint_prefix=prefix,
                    dumps=dumps)
                for n, j in zip(names, ids, strict=True)
            ]  # fmt: skip
            audits = [{"at": float(b), "kind": "admit", "job_id": j, "decision": "admit",
                       "detail": "", "policies": [], "digest": "d"} for j in ids]  # fmt: skip
            t1 = time.perf_counter()
            sqlitebulk.insert_admitted(s, jobs, audits)
            t2 = time.perf_counter()
            s.commit()
            t3 = time.perf_counter()
        if b >= batches - max(1, batches // 4):
            ins += t2 - t1
            com += t3 - t2
    with db.engine.connect() as c:  # every job written is there
        assert c.exec_driver_sql("SELECT count(*) FROM jobs").scalar_one() == batches * per_batch
    n = max(1, batches // 4) * per_batch
    return ins / n * 1e6, com / n * 1e6


def test_admission_writes_as_the_table_grows(tmp_path: Path) -> None:
    figures: dict[str, object] = {"jobs": JOBS, "batch": PER_BATCH}
    for label, page, checkpoint in (("sqlite_defaults", 4096, 1000 * 4096),
                                    ("hub", database.SQLITE_PAGE_SIZE,
                                     database.SQLITE_CHECKPOINT_BYTES)):  # fmt: skip
        where = tmp_path / label
        where.mkdir()
        with (
            mock.patch.object(database, "SQLITE_PAGE_SIZE", page),
            mock.patch.object(database, "SQLITE_CHECKPOINT_BYTES", checkpoint),
        ):
            db = Database.connect(f"sqlite:///{where / 'hub.db'}")
            try:
                ins, com = _fill(db, where)
            finally:
                db.close()
        figures[f"{label}_insert_us_per_job"] = round(ins, 1)
        figures[f"{label}_commit_us_per_job"] = round(com, 1)
        figures[f"{label}_us_per_job"] = round(ins + com, 1)
    ratio = figures["sqlite_defaults_us_per_job"] / figures["hub_us_per_job"]  # type: ignore[operator]
    figures["defaults_over_hub"] = round(ratio, 2)
    # Group commit: several batch requests in one transaction (``MAX_JOBS_PER_COMMIT``).
    where = tmp_path / "grouped"
    where.mkdir()
    db = Database.connect(f"sqlite:///{where / 'hub.db'}")
    try:
        ins, com = _fill(db, where, MAX_JOBS_PER_COMMIT)
    finally:
        db.close()
    figures["hub_grouped_jobs_per_commit"] = MAX_JOBS_PER_COMMIT
    figures["hub_grouped_insert_us_per_job"] = round(ins, 1)
    figures["hub_grouped_commit_us_per_job"] = round(com, 1)
    figures["hub_grouped_us_per_job"] = round(ins + com, 1)
    record("store_admission_writes", figures)
