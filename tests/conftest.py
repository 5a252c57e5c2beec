"""Shared fixtures: real PostgreSQL and Redis when present, a settable clock,
and app/client factories.

With CI set, a missing PostgreSQL or Redis FAILS the tests that need them; on a
laptop without them those tests are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from _app import create_tenant
from _env import METRICS_TOKEN, PG_ADMIN_URL, REDIS_URL, need_service


class Clock:
    """A settable clock: tests move time instead of sleeping."""

    def __init__(self, start: float | None = None) -> None:
        self.now = float(start if start is not None else int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def redis_url() -> str:
    need_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path: Path) -> str:
    """Each backend test runs on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'authserver.db'}"
    return request.getfixturevalue("fresh_postgres_url")


@pytest.fixture
def fresh_postgres_url() -> str:
    need_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg

    name = f"authserver_t_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def make_settings(database_url: str):
    from authserver.settings import Settings

    def make(**overrides) -> Settings:
        base = dict(database_url=database_url, public_url="http://testserver.local", log_json=False,
                    metrics_token=METRICS_TOKEN)
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture
async def client_factory(make_settings, clock):
    """Start apps (lifespan included) and give AsyncTestClients; closes them all."""
    from litestar.testing import AsyncTestClient

    from authserver.app import create_app

    opened = []

    async def make(**overrides):
        app = create_app(make_settings(**overrides), clock=clock)
        client = AsyncTestClient(app=app, base_url="http://testserver.local")
        await client.__aenter__()
        opened.append(client)
        return client

    yield make
    for c in reversed(opened):
        await c.__aexit__(None, None, None)


@pytest.fixture
async def tenant(make_settings):
    """The default tenant; yields (tenant_id, admin_key). Created before the app starts."""
    info, admin_key = await create_tenant(make_settings())
    return info.id, admin_key


@pytest.fixture
async def client(tenant, client_factory):
    return await client_factory()


@pytest.fixture
def admin_headers(tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant[1]}"}
