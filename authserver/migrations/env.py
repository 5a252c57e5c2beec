"""Alembic environment: runs on the service's async engine.

On PostgreSQL an advisory lock serializes replicas that start together.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from authserver.db.models import Base

config = context.config
target_metadata = Base.metadata
_LOCK_ID = 0x6A776B73  # "jwks"


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:
                await conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _LOCK_ID})
                await conn.commit()
            try:
                await conn.run_sync(_run)
                await conn.commit()
            finally:
                if postgres:
                    await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _LOCK_ID})
                    await conn.commit()
    finally:
        await engine.dispose()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:  # db.migrate.alembic_config always sets it
        raise RuntimeError("alembic: no sqlalchemy.url in the configuration")
    return url


if context.is_offline_mode():  # pragma: no cover - `alembic upgrade --sql`
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_main(_url()))
