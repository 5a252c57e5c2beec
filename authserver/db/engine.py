"""The async engine: SQLite tuned for concurrent writers, PostgreSQL pooled."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def _sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:  # pragma: no cover - driver hook
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()
        # The driver would BEGIN only at the first write, so a transaction's
        # reads (SELECT ... FOR UPDATE means nothing to SQLite) would see rows
        # another writer changes before our UPDATE: a roll could re-publish a
        # key revoked meanwhile. We begin ourselves, below.
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Any) -> None:  # pragma: no cover - driver hook
        # IMMEDIATE takes the write lock up front: read-modify-write
        # transactions are serialized, as row locks do on PostgreSQL.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _sqlite_hooks(engine.sync_engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, pool_timeout=5)


def create_sqlite_writer_engine(url: str) -> Engine:
    """A plain (thread-bound, not asyncio) engine on the same SQLite file, with
    the same pragmas and BEGIN IMMEDIATE: for whole transactions run in one
    hop to a thread (``authserver.db.writes``)."""
    engine = create_sync_engine(url.replace("sqlite+aiosqlite:", "sqlite:", 1), connect_args={"timeout": 30})
    _sqlite_hooks(engine)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
