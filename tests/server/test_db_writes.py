"""authserver.db.writes: one transaction per body, on SQLite (a writer thread)
and PostgreSQL alike; ``durable=False`` relaxes only the commit's wait for the disk."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest
from _db import query_sql
from sqlalchemy import make_url, text
from sqlalchemy.orm import Session

from authserver.db import create_engine, session_factory
from authserver.db.writes import Transactions


@asynccontextmanager
async def _writes(database_url: str, table: str) -> AsyncIterator[tuple[Callable[[], Any], Transactions]]:
    """Sessions and a Transactions on a fresh engine, with an empty table to write."""
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    writes = Transactions(database_url, sessions)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)"))
        yield sessions, writes
    finally:
        writes.close()
        await engine.dispose()


def _sync_setting(s: Session) -> str:
    """What the database says about this transaction's commit."""
    if s.get_bind().dialect.name == "sqlite":
        return {0: "off", 1: "normal", 2: "full", 3: "extra"}[s.execute(text("PRAGMA synchronous")).scalar_one()]
    return str(s.execute(text("SHOW synchronous_commit")).scalar_one())


async def test_commit_rollback_and_durability(database_url: str) -> None:
    async with _writes(database_url, "w") as (sessions, writes):
        def add(n: int) -> Callable[[Session], str]:
            def body(s: Session) -> str:
                s.execute(text("INSERT INTO w (id) VALUES (:n)"), {"n": n})
                return _sync_setting(s)
            return body

        relaxed = await writes.run(add(1), durable=False)
        durable = await writes.run(add(2))
        assert (relaxed, durable) == (("normal", "full") if database_url.startswith("sqlite") else ("off", "on"))
        # the relaxed setting does not stick to the connection for the next durable commit
        assert await writes.run(add(3)) == durable

        def fails(s: Session) -> None:
            s.execute(text("INSERT INTO w (id) VALUES (4)"))
            raise RuntimeError("in the body")

        with pytest.raises(RuntimeError):
            await writes.run(fails)
        async with sessions() as s:  # committed where the body returned, rolled back where it raised
            assert (await s.execute(text("SELECT id FROM w ORDER BY id"))).scalars().all() == [1, 2, 3]


async def test_concurrent_bodies_share_a_commit_and_fail_alone(database_url: str) -> None:
    """SQLite: bodies queued while the writer commits share the next commit
    (group commit); one that raises takes back only its own writes. PostgreSQL:
    each its own transaction, same outcome; a one-statement body still commits."""
    async with _writes(database_url, "g") as (sessions, writes):
        release = threading.Event()
        batches = itertools.count(1)

        def add(n: int, *, hold: bool = False, fail: bool = False) -> Callable[[Session], int]:
            def body(s: Session) -> int:
                if hold:  # keep the writer busy until the others are queued behind it
                    release.wait(10)
                s.execute(text("INSERT INTO g (id) VALUES (:n)"), {"n": n})
                if fail:
                    raise RuntimeError(f"body {n}")
                # the same number for bodies of one session (one transaction)
                return int(s.info.setdefault("batch", next(batches)))
            return body

        first = asyncio.ensure_future(writes.run(add(0, hold=True)))
        await asyncio.sleep(0.2)
        rest = [asyncio.ensure_future(writes.run(add(n, fail=n == 3))) for n in range(1, 7)]
        await asyncio.sleep(0.2)
        release.set()
        outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
        assert isinstance(outcomes[3], RuntimeError) and str(outcomes[3]) == "body 3"
        async with sessions() as s:
            assert (await s.execute(text("SELECT id FROM g ORDER BY id"))).scalars().all() == [0, 1, 2, 4, 5, 6]
        if database_url.startswith("sqlite"):
            # the five that waited behind the first were one transaction
            assert len({outcomes[n] for n in (1, 2, 4, 5, 6)}) == 1 and outcomes[0] != outcomes[1]
        assert await writes.run(add(7), one_statement=True) > 0
        async with sessions() as s:
            assert (await s.execute(text("SELECT count(*) FROM g WHERE id = 7"))).scalar_one() == 1


async def test_a_thread_checkpoints_the_wal_and_keeps_it_short(database_url: str) -> None:
    """SQLite: no commit checkpoints (``wal_autocheckpoint=0`` on the server's
    connections); the checkpoint thread does, and once it has copied every
    frame the WAL starts again from its beginning instead of growing.
    Everything committed is in the database after. PostgreSQL: no such thread."""
    if not database_url.startswith("sqlite"):
        engine = create_engine(database_url)
        writes = Transactions(database_url, session_factory(engine), checkpoint_seconds=0.05)
        assert writes.checkpointer is None
        writes.close()
        await engine.dispose()
        return
    engine = create_engine(database_url, auto_checkpoint=False)
    writes = Transactions(database_url, session_factory(engine), checkpoint_seconds=0.05)
    assert writes.checkpointer is not None
    wal = Path(make_url(database_url).database + "-wal")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE c (id INTEGER PRIMARY KEY, pad TEXT)"))
            assert (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one() == 0

        def add(n: int) -> Callable[[Session], int]:
            def body(s: Session) -> int:
                s.execute(text("INSERT INTO c (id, pad) VALUES (:n, :pad)"), {"n": n, "pad": "x" * 3000})
                return int(s.execute(text("PRAGMA wal_autocheckpoint")).scalar_one())
            return body

        assert {await writes.run(add(n)) for n in range(150)} == {0}
        longest = wal.stat().st_size
        done = writes.checkpointer.complete
        for _ in range(300):  # a complete checkpoint after those writes (it runs every 0.05 s)
            if writes.checkpointer.complete > done:
                break
            await asyncio.sleep(0.05)
        assert writes.checkpointer.complete > done
        for n in range(150, 170):
            await writes.run(add(n))
        assert wal.stat().st_size == longest  # written over from its start, not appended to
    finally:
        writes.close()
        await engine.dispose()
    with closing(sqlite3.connect(make_url(database_url).database)) as db:
        assert db.execute("SELECT count(*), min(id), max(id) FROM c").fetchone() == (170, 0, 169)


async def test_the_idle_writer_restarts_a_checkpointed_wal(database_url: str) -> None:
    """SQLite: once a checkpoint after its commits copied every frame, the idle
    writer thread starts the WAL again itself, with a write that changes nothing
    (page 1, one frame), so the next commit does not also flush a new WAL header."""
    if not database_url.startswith("sqlite"):
        return
    path = make_url(database_url).database
    engine = create_engine(database_url, auto_checkpoint=False)
    writes = Transactions(database_url, session_factory(engine), checkpoint_seconds=0.05)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE r (id INTEGER PRIMARY KEY, pad TEXT)"))
        for n in range(20):
            await writes.run(lambda s, n=n: s.execute(text("INSERT INTO r VALUES (:n, :p)"), {"n": n, "p": "x" * 3000}))
        with closing(sqlite3.connect(path)) as db:
            state = None
            for _ in range(200):  # checkpoints run every 0.05 s
                state = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if state == (0, 1, 1):
                    break
                await asyncio.sleep(0.05)
            assert state == (0, 1, 1)  # 20 writes' frames gone: the WAL holds the restart's page 1 alone
            assert db.execute("PRAGMA user_version").fetchone() == (0,)
            assert db.execute("SELECT count(*) FROM r").fetchone() == (20,)
    finally:
        writes.close()
        await engine.dispose()


async def test_a_rehearsal_leaves_nothing(database_url: str) -> None:
    """``rehearse`` runs a body as ``run`` would and always rolls it back."""
    async with _writes(database_url, "r") as (sessions, writes):
        await writes.rehearse(lambda s: s.execute(text("INSERT INTO r (id) VALUES (1)")))
        await writes.run(lambda s: s.execute(text("INSERT INTO r (id) VALUES (2)")))
        async with sessions() as s:
            assert (await s.execute(text("SELECT id FROM r"))).scalars().all() == [2]


async def test_the_servers_mint_rehearsal_writes_nothing(make_settings) -> None:
    """The rehearsal of a mint's writes at start (a tenant that does not exist):
    no key, audit event or webhook row stays, on SQLite and PostgreSQL, and a
    real mint after it is written as usual."""
    from authserver.offline import open_core
    from authserver.services.common import Actor

    settings = make_settings(default_algorithm="EdDSA")
    async with open_core(settings) as core:
        await core.tenants.create_tenant("t1")
        await core.lifecycle.rehearse()
        row, _ = await core.lifecycle.mint("t1", {}, Actor("cli"))
    counts = {table: (await query_sql(settings.database_url, f"SELECT count(*) FROM {table}"))[0][0]
              for table in ("api_keys", "audit_log", "webhook_events", "webhook_deliveries")}
    # the tenant's admin key and the minted key; their two audit events
    assert counts == {"api_keys": 2, "audit_log": 3, "webhook_events": 0, "webhook_deliveries": 0}, counts
    assert (await query_sql(settings.database_url, "SELECT id FROM api_keys WHERE id = :id", id=row.id)) == [(row.id,)]
