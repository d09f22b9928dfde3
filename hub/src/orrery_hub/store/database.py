"""The engine and sessions. Built by ``Database.connect(url)``, never at import time.

SQLite runs in WAL mode with one writer at a time: the hub's service funnels every store
call through one worker thread (``service.StoreRunner``), so the event loop never blocks
on the database and writes never contend.

Durability: ``synchronous=FULL``, so a commit is on disk before it returns — a placement
whose order has gone out is never undone by a power loss (NORMAL in WAL mode may lose the
last transactions). Transactions: pysqlite's own BEGIN handling is switched off and
SQLAlchemy emits BEGIN itself (the recipe in SQLAlchemy's SQLite notes), so a transaction
spans its reads too and SAVEPOINTs work: the applier commits each job in its own savepoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, OperationalError
from sqlalchemy.orm import ORMExecuteState
from sqlmodel import Session, SQLModel, create_engine

from orrery.errors import InvalidInput, Unavailable
from orrery_hub.store import (  # noqa: F401  (registers the tables)
    identityrows,
    leaderrows,
    models,
    tokenrows,
)

SQLITE_SYNCHRONOUS = "FULL"
# Admission inserts each job into four indexes keyed by its id (jobs, slices, events,
# audit): at random places, so a commit dirties pages all over them, and SQLite's default
# WAL checkpoint (every 1,000 pages, 4 MB) ran every other group commit, copying back
# the same pages again and again. At 80,000 jobs, in batches of 1,000 (``benchmarks/
# bench_store.py``): 60 µs a job written and committed with the defaults, 38 µs with 8 KiB
# pages and a checkpoint every 64 MiB of WAL. The page size holds for databases created
# from now on (SQLite fixes it at creation); the checkpoint size is set in pages of the
# size in use.
SQLITE_PAGE_SIZE = 8192
SQLITE_CHECKPOINT_BYTES = 64 << 20
# A pooled connection idle for longer than this is tested before use (``_ping_if_idle``).
PING_IDLE_S = 1.0


class _Session(Session):
    """A session that remembers whether it wrote: only writes are fenced (a standby
    serves reads)."""


@event.listens_for(_Session, "after_flush")
def _flushed(session: Session, _ctx: Any) -> None:
    session.info["wrote"] = True


@event.listens_for(_Session, "do_orm_execute")
def _dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info["wrote"] = True


def wrote(s: Session) -> bool:
    return bool(s.new or s.dirty or s.deleted or s.info.get("wrote"))


def _ping_if_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling, only for connections that sat idle.

    ``pool_pre_ping`` pings on every checkout: one more round trip per transaction, and
    the one store thread runs a transaction per admission batch and three per pass (on
    PostgreSQL, submit p50 27 -> 19 ms without it, same run). A connection in steady use
    has just answered; one idle past ``PING_IDLE_S`` (a database restarted meanwhile) is
    tested, and a dead one is replaced: ``DisconnectionError`` makes the pool connect
    again (SQLAlchemy's documented checkout recipe)."""

    @event.listens_for(engine, "checkin")
    def _back(_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _out(conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_IDLE_S:
            return  # new (just connected) or in steady use
        try:
            cur = conn.cursor()
            try:
                cur.execute("SELECT 1")
            finally:
                cur.close()
        except Exception as exc:
            raise DisconnectionError(f"idle connection is gone: {exc}") from exc


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Hub standby (``orrery_hub.leader``): run before committing any transaction that
        # wrote; it raises to refuse the commit. None: a lone hub, nothing to fence.
        self.fence: Callable[[Session], None] | None = None

    @classmethod
    def connect(cls, url: str) -> Database:
        """Open (and create) the database at ``url``. Errors say what is wrong with it."""
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise InvalidInput(f"--db: {url!r} is not a database URL") from None
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        elif parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            # Use psycopg 3 (what the postgres extra installs) unless a driver is named.
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(parsed, **kwargs)
        _ping_if_idle(engine)
        if parsed.get_backend_name() == "sqlite":

            @event.listens_for(engine, "connect")
            def _pragmas(conn: Any, _record: Any) -> None:
                conn.isolation_level = None  # SQLAlchemy emits BEGIN (below), not pysqlite
                cur = conn.cursor()
                cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # a new database only
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
                (page,) = cur.execute("PRAGMA page_size").fetchone()
                cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_BYTES // page}")
                # The WAL file is cut back to this after a checkpoint empties it.
                cur.execute(f"PRAGMA journal_size_limit={SQLITE_CHECKPOINT_BYTES}")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            @event.listens_for(engine, "begin")
            def _begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN")

        db = cls(engine)
        try:
            SQLModel.metadata.create_all(engine)
        except OperationalError as exc:
            raise Unavailable(f"database {parsed.render_as_string()}: {exc.orig}") from None
        return db

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back when it raises."""
        with _Session(self.engine, expire_on_commit=False) as s:
            try:
                yield s
                if self.fence is not None and not s.info.get("unfenced") and wrote(s):
                    self.fence(s)
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except OperationalError:
            return False

    def close(self) -> None:
        self.engine.dispose()
