"""authserver.db.writes: one transaction per body, on SQLite (a writer thread)
and PostgreSQL alike; ``durable=False`` relaxes only the commit's wait for the disk."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from authserver.db import create_engine, session_factory
from authserver.db.writes import Transactions


def _sync_setting(s: Session) -> str:
    """What the database says about this transaction's commit."""
    if s.get_bind().dialect.name == "sqlite":
        return {0: "off", 1: "normal", 2: "full", 3: "extra"}[s.execute(text("PRAGMA synchronous")).scalar_one()]
    return str(s.execute(text("SHOW synchronous_commit")).scalar_one())


async def test_commit_rollback_and_durability(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    writes = Transactions(database_url, sessions)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE w (id INTEGER PRIMARY KEY)"))

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
    finally:
        writes.close()
        await engine.dispose()
