"""Admission's writes on SQLite through the driver itself.

SQLAlchemy's ``executemany`` turns each row into parameters in Python (~20 µs a row with
its JSON columns), more than SQLite takes to store it; a batch of 1,000 jobs writes
4,000 rows. Here each table gets one ``sqlite3`` ``executemany`` over plain tuples, and
the jobs one multi-row insert that returns each job's ``seq``. JSON values are encoded as
SQLAlchemy encodes them (``json.dumps``; None as JSON null), so the rows are the rows the
ORM path writes. Job ids come checked (``jobs.new_ids``): SQLite is in-process, so the
query costs no round trip.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, Table
from sqlmodel import Session

from orrery_hub.store.models import AuditRow, EventRow, JobRow, SliceRow

_ROWS_PER_INSERT = 500  # x 14 columns: well inside SQLite's 32,766 parameters


def available(s: Session) -> bool:
    return s.get_bind().dialect.driver == "pysqlite"


def insert_admitted(
    s: Session, jobs: Sequence[Any], audits: list[dict[str, Any]]
) -> list[int]:
    """Insert ``jobs`` (``jobs.NewJob``) and ``audits``; each job's ``seq``, in order."""
    conn = s.connection()
    raw: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
    s.info["wrote"] = True  # not through the ORM: the standby's fence must still see it
    quote = conn.dialect.identifier_preparer.quote
    job_rows = [j.job for j in jobs]
    seq: dict[str, int] = {}
    cur = raw.cursor()
    try:
        if job_rows:
            jobs_t: Table = JobRow.__table__  # type: ignore[attr-defined]
            cols = list(job_rows[0])
            one = "(" + ", ".join("?" * len(cols)) + ")"
            head = f"INSERT INTO {quote(jobs_t.name)} ({', '.join(map(quote, cols))}) VALUES "
            values = _tuples(jobs_t, job_rows, {"manifest": [j.manifest_json for j in jobs]})
            for k in range(0, len(values), _ROWS_PER_INSERT):
                chunk = values[k : k + _ROWS_PER_INSERT]
                sql = head + ", ".join([one] * len(chunk)) + " RETURNING id, seq"
                seq.update(cur.execute(sql, [v for row in chunk for v in row]).fetchall())
        tables: list[tuple[Table, list[dict[str, Any]]]] = [
            (SliceRow.__table__, [sl for j in jobs for sl in j.slices]),  # type: ignore[attr-defined]
            (EventRow.__table__, [j.event for j in jobs]),  # type: ignore[attr-defined]
            (AuditRow.__table__, audits),  # type: ignore[attr-defined]
        ]
        for table, rows in tables:
            if rows:
                cols = list(rows[0])
                sql = (
                    f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, cols))}) "
                    f"VALUES ({', '.join('?' * len(cols))})"
                )
                cur.executemany(sql, _tuples(table, rows))
    finally:
        cur.close()
    return [seq[j["id"]] for j in job_rows]


def _tuples(
    table: Table, rows: list[dict[str, Any]], encoded: dict[str, list[str]] | None = None
) -> list[tuple[Any, ...]]:
    """Each row's values in its first row's column order, JSON columns encoded; those in
    ``encoded`` come encoded already (each row's text, in order)."""
    cols = list(rows[0])
    done = encoded or {}
    js = [i for i, k in enumerate(cols) if isinstance(table.c[k].type, JSON) and k not in done]
    given = [(cols.index(k), texts) for k, texts in done.items()]
    get = itemgetter(*cols)  # every table written here has several columns: a tuple
    out: list[tuple[Any, ...]] = []
    for n, row in enumerate(rows):
        values = list(get(row))
        for i in js:
            values[i] = _json(values[i])
        for i, texts in given:
            values[i] = texts[n]
        out.append(tuple(values))
    return out


def _json(value: Any) -> str:
    # Most of admission's JSON values are empty (labels, gpus, policies) or null (waiting).
    if value is None:
        return "null"
    if not value and type(value) in (list, dict):
        return "[]" if type(value) is list else "{}"
    return json.dumps(value)
