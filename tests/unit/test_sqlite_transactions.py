"""SQLite transactions must isolate read-modify-write like PostgreSQL's row locks.

The driver would only BEGIN at the first write, so a transaction's reads saw
rows another writer changed before its UPDATE (a roll re-published a key that
was revoked meanwhile, seen under load in test_persistence).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from authserver.db import create_engine, session_factory


async def test_a_writer_waits_for_a_transaction_that_has_only_read(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    sessions = session_factory(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE k (id INTEGER PRIMARY KEY, state TEXT)"))
            await conn.execute(text("INSERT INTO k VALUES (1, 'active')"))
        order: list[str] = []
        first_read = asyncio.Event()

        async def roll() -> None:
            async with sessions() as s, s.begin():
                state = (await s.execute(text("SELECT state FROM k WHERE id = 1"))).scalar_one()
                first_read.set()
                await asyncio.sleep(0.3)  # the revoke below must not slip in here
                order.append(f"roll saw {state}")
                await s.execute(text("UPDATE k SET state = 'rolling' WHERE id = 1 AND state = :s"), {"s": state})

        async def revoke() -> None:
            await first_read.wait()
            async with sessions() as s, s.begin():
                await s.execute(text("UPDATE k SET state = 'revoked' WHERE id = 1"))
            order.append("revoked")

        await asyncio.gather(roll(), revoke())
        assert order == ["roll saw active", "revoked"]
        async with sessions() as s:
            assert (await s.execute(text("SELECT state FROM k"))).scalar_one() == "revoked"
    finally:
        await engine.dispose()
