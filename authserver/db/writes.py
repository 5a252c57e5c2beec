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

On SQLite, bodies queued while the writer thread commits share its next
transaction and commit (group commit; each in a savepoint): the disk's flush,
the floor of a durable commit, is paid once per batch instead of once per mint.
With ``checkpoint_seconds`` > 0 no commit checkpoints the WAL: a thread of
its own does (authserver.db.checkpoints), and once it has copied every frame
this thread, if idle, starts the WAL again from its beginning with a write
that changes nothing (``_restart_wal``): the first commit into a restarted
WAL also writes and flushes the WAL's header, two flushes where a commit has
one, and that commit was a mint's (one in 8 at 8 mints/s).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from .checkpoints import WalCheckpointer, checkpointed_file
from .engine import create_sqlite_writer_engine

__all__ = ["Transactions"]

log = logging.getLogger("authserver.db")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Job(Generic[T]):
    body: Callable[[Session], T]
    durable: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller went away (cancelled): the write stands, nobody to tell
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _synchronous(conn: Connection, durable: bool) -> None:
    """FULL (the commit waits for the disk) or NORMAL, set on the driver's
    connection outside a transaction (a statement through SQLAlchemy would
    BEGIN first); kept per connection."""
    sync = "FULL" if durable else "NORMAL"
    if conn.connection.info.get("synchronous") != sync:
        conn.connection.driver_connection.execute(f"PRAGMA synchronous={sync}")  # type: ignore[union-attr]
        conn.connection.info["synchronous"] = sync


class Transactions:
    def __init__(self, url: str, sessions: async_sessionmaker[AsyncSession], *,
                 checkpoint_seconds: float = 0.0) -> None:
        """``checkpoint_seconds`` > 0 (SQLite): checkpoint the WAL in a thread
        at that interval; the async engine behind ``sessions`` must then be
        made with ``auto_checkpoint=False`` when ``checkpointed_file`` names a
        file (``Core.build`` does both)."""
        self.sessions = sessions
        self._engine: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        self.checkpointer: WalCheckpointer | None = None
        if url.startswith("sqlite"):
            path = checkpointed_file(url, checkpoint_seconds)
            self._engine = create_sqlite_writer_engine(url, auto_checkpoint=path is None)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-writer")
            if path is not None:
                self.checkpointer = WalCheckpointer(path, checkpoint_seconds, on_complete=self._restart_soon)
        # bodies waiting for the writer thread; _draining: it is taking them;
        # _restart: the WAL is checkpointed, restart it if no body comes first
        self._lock = threading.Lock()
        self._queue: list[_Job[Any]] = []
        self._draining = False
        self._restart = False

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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(body, durable, loop, future)
        with self._lock:
            self._queue.append(job)
            start, self._draining = not self._draining, True
        if start:
            self._thread.submit(self._drain)
        return await job.future

    def _in_thread(self, jobs: list[_Job[Any]]) -> None:
        """One transaction, one commit, for every body queued meanwhile (group
        commit): concurrent mints share the wait for the disk. With more than
        one, each body runs in a savepoint, so one that raises takes back its
        own writes only."""
        assert self._engine is not None  # with the thread
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            with self._engine.connect() as conn:
                _synchronous(conn, any(j.durable for j in jobs))
                with Session(conn, expire_on_commit=False) as s, s.begin():
                    if len(jobs) == 1:
                        outcomes.append((jobs[0].body(s), None))
                    else:
                        for job in jobs:
                            try:
                                with s.begin_nested():
                                    outcomes.append((job.body(s), None))
                            except Exception as exc:  # noqa: BLE001 - handed to that body's caller
                                outcomes.append((None, exc))
        except Exception as failed:  # noqa: BLE001 - nothing committed: every caller gets it
            outcomes = [(None, failed)] * len(jobs)
        for job, (result, error) in zip(jobs, outcomes, strict=True):
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, result, error)
            except RuntimeError:  # its loop is closed: nobody waits any more
                pass
        if self.checkpointer is not None:
            self.checkpointer.committed()

    def _drain(self) -> None:
        """The writer thread: commit what is queued, batch after batch, until
        nothing is; then restart the WAL if the checkpointer asked (a batch
        restarts it anyway)."""
        while True:
            with self._lock:
                jobs, self._queue = self._queue, []
                restart, self._restart = self._restart and not jobs, False
                if not jobs and not restart:
                    self._draining = False
                    return
            if jobs:
                self._in_thread(jobs)
            else:
                self._restart_wal()

    def _restart_soon(self) -> None:
        """The checkpointer copied every frame after one of our commits (its thread)."""
        assert self._thread is not None  # a checkpointer comes with the writer thread
        with self._lock:
            self._restart = True
            start, self._draining = not self._draining, True
        if start:
            try:
                self._thread.submit(self._drain)
            except RuntimeError:  # shut down: nothing to restart any more
                pass

    def _restart_wal(self) -> None:
        """A transaction that rewrites page 1 unchanged (``user_version`` set to
        its own value): the smallest write, so the WAL starts again here, its
        header flushed now, not in the next mint. Not our commit: it does not
        wake the checkpointer (an idle server would restart for its own restart)."""
        assert self._engine is not None  # with the thread
        try:
            with self._engine.connect() as conn:
                _synchronous(conn, True)
                with conn.begin():
                    version = int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())
                    conn.exec_driver_sql(f"PRAGMA user_version = {version}")
        except Exception as exc:  # noqa: BLE001 - a mint's commit restarts it instead
            log.debug("WAL restart failed (%s)", type(exc).__name__)

    async def rehearse(self, body: Callable[[Session], Any]) -> None:
        """Run ``body`` in a transaction that is always rolled back, the way
        ``run`` would (the same thread and connection on SQLite, where foreign
        keys are not checked: nothing stays): its statements are compiled and
        cached, its connection opened, before the first real one needs them."""
        if self._thread is None:
            async with self.sessions() as s, s.begin() as tx:
                await s.run_sync(body)
                await tx.rollback()
            return
        await asyncio.get_running_loop().run_in_executor(self._thread, self._rehearse_in_thread, body)

    def _rehearse_in_thread(self, body: Callable[[Session], Any]) -> None:
        assert self._engine is not None  # with the thread
        with self._engine.connect() as conn, Session(conn) as s:
            s.begin()
            s.connection().exec_driver_sql("PRAGMA defer_foreign_keys = ON")
            try:
                body(s)
            finally:
                s.rollback()

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._engine is not None:
            self._engine.dispose()
