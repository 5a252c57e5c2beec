"""Short write transactions whose body is plain SQLAlchemy code.

On SQLite the whole transaction runs in one hop to a writer thread on a
thread-bound engine: through aiosqlite every statement costs several hops
between the event loop and the driver's thread (cursor, execute, fetch,
close), and on a busy machine each hop waits for a CPU; SQLite takes one
writer at a time anyway. On PostgreSQL the body runs on the async session
(``run_sync``), statement by statement as before. Either way it is one
transaction: committed when the body returns, rolled back if it raises.

``durable=False`` commits without waiting for the disk (SQLite
``synchronous=NORMAL`` in WAL mode, PostgreSQL ``synchronous_commit=off``):
safe against a killed process, and the database stays consistent, but a
power loss or OS crash may lose the last such commits. Any later durable
commit flushes them too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from .engine import create_sqlite_writer_engine

__all__ = ["Transactions"]

T = TypeVar("T")


class Transactions:
    def __init__(self, url: str, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._engine: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        if url.startswith("sqlite"):
            self._engine = create_sqlite_writer_engine(url)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-writer")

    async def run(self, body: Callable[[Session], T], *, durable: bool = True, one_statement: bool = False) -> T:
        """``body(session)`` in one transaction; its objects stay usable after
        (nothing is expired at commit).

        ``one_statement``: the body runs a single statement on PostgreSQL, which
        is atomic by itself: a durable one goes without BEGIN and COMMIT (one
        round trip instead of three; the server commits it, and waits for the
        disk, before it answers)."""
        if self._thread is None:
            if one_statement and durable:
                async with self.sessions() as s:
                    await s.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                    return await s.run_sync(body)
            async with self.sessions() as s, s.begin():
                if not durable:  # this transaction only
                    await s.execute(text("SET LOCAL synchronous_commit TO OFF"))
                return await s.run_sync(body)
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._in_thread, body, durable)

    def _in_thread(self, body: Callable[[Session], T], durable: bool) -> T:
        assert self._engine is not None  # with the thread
        with self._engine.connect() as conn:
            # set on the driver's connection, outside a transaction (a statement
            # through SQLAlchemy would BEGIN first); kept per connection
            sync = "FULL" if durable else "NORMAL"
            if conn.connection.info.get("synchronous") != sync:
                conn.connection.driver_connection.execute(f"PRAGMA synchronous={sync}")  # type: ignore[union-attr]
                conn.connection.info["synchronous"] = sync
            with Session(conn, expire_on_commit=False) as s, s.begin():
                return body(s)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._engine is not None:
            self._engine.dispose()
