"""The async engine: SQLite tuned for concurrent writers, PostgreSQL pooled."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def _sqlite_hooks(engine: Engine, auto_checkpoint: bool) -> None:
    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:  # pragma: no cover - driver hook
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if not auto_checkpoint:  # a WalCheckpointer thread does it (authserver.db.checkpoints)
            cur.execute("PRAGMA wal_autocheckpoint=0")
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


# a pooled connection used this recently is taken as alive without a ping
PING_AFTER_IDLE_SECONDS = 1.0


def _closed_by_server(dbapi_conn: Any) -> bool:
    """The driver already saw this connection end (the server closed it: a
    restart, a terminated backend): asyncpg learns that from the socket as
    soon as the event loop runs, so asking costs no round trip."""
    is_closed = getattr(getattr(dbapi_conn, "driver_connection", None), "is_closed", None)
    return bool(is_closed is not None and is_closed())


def _ping_when_idle(engine: Engine) -> None:
    """pool_pre_ping, but only for a connection idle a while: asyncpg's ping is
    BEGIN, a statement and ROLLBACK, three round trips on every checkout, three
    of a mint's four. Every checkout first drops a connection the server has
    closed (a restart: no round trip, see _closed_by_server), so no request
    runs on one. A connection that worked a second ago and still looks open is
    alive unless the server vanished without closing it (a lost host, a
    failover) in that second, and then the request fails (503) as it could
    between a ping and its first statement anyway; a longer idle one is pinged
    and replaced if dead."""

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_conn: Any, record: Any) -> None:  # pragma: no cover - driver hook
        record.info["used_at"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _used(_dbapi_conn: Any, record: Any) -> None:  # pragma: no cover - driver hook
        record.info["used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:  # pragma: no cover - driver hook
        # DisconnectionError: the pool replaces this connection with a new one and checks out that
        if _closed_by_server(dbapi_conn):
            raise DisconnectionError("the server closed this connection")
        if time.monotonic() - record.info.get("used_at", 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError(f"ping failed: {type(exc).__name__}") from exc


def create_engine(url: str, *, auto_checkpoint: bool = True) -> AsyncEngine:
    """``auto_checkpoint=False`` (SQLite): commits never checkpoint the WAL;
    a ``WalCheckpointer`` must (``authserver.db.writes.Transactions`` runs one)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _sqlite_hooks(engine.sync_engine, auto_checkpoint)
        return engine
    engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_timeout=5)
    _ping_when_idle(engine.sync_engine)
    return engine


def create_sqlite_writer_engine(url: str, *, auto_checkpoint: bool = True) -> Engine:
    """A plain (thread-bound, not asyncio) engine on the same SQLite file, with
    the same pragmas and BEGIN IMMEDIATE: for whole transactions run in one
    hop to a thread (``authserver.db.writes``)."""
    engine = create_sync_engine(url.replace("sqlite+aiosqlite:", "sqlite:", 1), connect_args={"timeout": 30})
    _sqlite_hooks(engine, auto_checkpoint)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
