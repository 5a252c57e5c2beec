"""Every migration, on SQLite and PostgreSQL: the schema at head is the
models' (every table and column), and downgrading to the start and upgrading
again gives the same schema."""

from __future__ import annotations

import asyncio

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine


async def _schema(url: str) -> dict[str, list[str]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            def read(c):
                insp = inspect(c)
                return {t: sorted(col["name"] for col in insp.get_columns(t))
                        for t in insp.get_table_names() if t != "alembic_version"}
            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def test_head_is_the_models_and_the_chain_round_trips(database_url):
    from alembic import command

    from authserver.db.migrate import alembic_config, upgrade_async
    from authserver.db.models import Base

    await upgrade_async(database_url)
    head = await _schema(database_url)
    assert head == {t.name: sorted(c.name for c in t.columns) for t in Base.metadata.sorted_tables}
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "base")
    assert await _schema(database_url) == {}
    await upgrade_async(database_url)
    assert await _schema(database_url) == head
