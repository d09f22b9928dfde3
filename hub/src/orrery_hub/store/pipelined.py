"""Admission's writes on PostgreSQL in one round trip (psycopg's pipeline mode).

Through SQLAlchemy, admitting a batch costs a round trip per statement: the query that
checks its fresh job ids are unused, the inserts of jobs, slices, events and audit rows,
each waiting for the last. On a busy machine each round trip is a few milliseconds of
waiting for the server to be scheduled, and the store thread admits nothing meanwhile.
Here the ids are not checked first; every insert is sent at once inside a savepoint and
the answers are read at one sync. An id already taken (``<name>-<6 hex>``: rare) fails
the jobs' primary key: the savepoint is rolled back, nothing of the batch is stored, and
``IdTaken`` tells the caller to admit it again the checked way (``jobs.new_ids``).

The statements are SQLAlchemy's own inserts, compiled for the connection's dialect, and
JSON values are encoded as SQLAlchemy encodes them (``json.dumps``; None as JSON null), so
the rows are the rows the ORM path writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Table
from sqlmodel import Session

from orrery_hub.store.models import AuditRow, EventRow, JobRow, SliceRow

_SAVEPOINT = "orrery_admit"


class IdTaken(Exception):
    """A fresh job id was in use: the batch was not stored; admit it again, checked."""


def available(s: Session) -> bool:
    """Whether this session's database takes pipelined admission (PostgreSQL via psycopg)."""
    return s.get_bind().dialect.driver == "psycopg"


def insert_admitted(
    s: Session, jobs: Sequence[Any], audits: list[dict[str, Any]]
) -> list[int]:
    """Insert ``jobs`` (``jobs.NewJob``) and ``audits``; each job's ``seq``, in order."""
    import psycopg

    conn = s.connection()
    pg: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    s.info["wrote"] = True  # not through the ORM: the standby's fence must still see it
    dialect = conn.dialect
    tables: list[tuple[Table, list[dict[str, Any]]]] = [
        (SliceRow.__table__, [sl for j in jobs for sl in j.slices]),  # type: ignore[attr-defined]
        (EventRow.__table__, [j.event for j in jobs]),  # type: ignore[attr-defined]
        (AuditRow.__table__, audits),  # type: ignore[attr-defined]
    ]
    job_rows = [j.job for j in jobs]
    with pg.cursor() as first, pg.cursor() as rest:
        try:
            with pg.pipeline():  # one sync: every answer read at its end
                rest.execute(f"SAVEPOINT {_SAVEPOINT}")
                if job_rows:
                    jobs_t: Table = JobRow.__table__  # type: ignore[attr-defined]
                    sql = _sql(jobs_t, job_rows[0], dialect, returning=True)
                    pre = {"manifest": [j.manifest_json for j in jobs]}
                    first.executemany(sql, _encoded(jobs_t, job_rows, pre), returning=True)
                for table, rows in tables:
                    if rows:
                        rest.executemany(_sql(table, rows[0], dialect), _encoded(table, rows))
                rest.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        except psycopg.errors.UniqueViolation as exc:
            pg.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            if exc.diag.table_name != "jobs":
                raise
            raise IdTaken(str(exc)) from None
        if not job_rows:
            return []
        seq: dict[str, int] = {}
        while True:
            for job_id, n in first.fetchall():
                seq[job_id] = n
            if not first.nextset():
                break
    return [seq[j["id"]] for j in job_rows]


def _sql(table: Table, row: dict[str, Any], dialect: Any, *, returning: bool = False) -> str:
    """The insert of ``row``'s columns (a jobs insert returning each row's id and seq)."""
    key = (table.name, tuple(row), dialect.name, returning)
    sql = _COMPILED.get(key)
    if sql is None:
        stmt = table.insert()
        if returning:
            stmt = stmt.returning(table.c.id, table.c.seq)
        sql = _COMPILED[key] = str(stmt.compile(dialect=dialect, column_keys=list(row)))
    return sql


_COMPILED: dict[tuple[str, tuple[str, ...], str, bool], str] = {}  # a handful, one a table


def _encoded(
    table: Table, rows: list[dict[str, Any]], encoded: dict[str, list[str]] | None = None
) -> list[dict[str, Any]]:
    """Rows with their JSON columns encoded; those in ``encoded`` come encoded already
    (each row's text, in order)."""
    done = encoded or {}
    js = [k for k in rows[0] if isinstance(table.c[k].type, JSON) and k not in done]
    if not js and not done:
        return rows
    return [
        {**r, **{k: json.dumps(r[k]) for k in js}, **{k: t[n] for k, t in done.items()}}
        for n, r in enumerate(rows)
    ]
