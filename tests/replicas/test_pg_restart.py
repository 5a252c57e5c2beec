"""A PostgreSQL restart under a running server (a throwaway cluster): once the
database is back, no request fails on a pooled connection the old server
process closed."""

from __future__ import annotations

import asyncio

import pytest
from _app import create_tenant
from _env import METRICS_TOKEN

pytestmark = pytest.mark.postgres


async def test_requests_after_a_restart_run_on_fresh_connections(pg_proc, clock, monkeypatch):
    from litestar.testing import AsyncTestClient

    import authserver.db.engine as engine_module
    from authserver.app import create_app
    from authserver.settings import Settings

    # every pooled connection counts as just used, however long the restart takes:
    # only the check for a connection the server closed can keep a request off it
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
    settings = Settings(database_url=pg_proc.url, public_url="http://testserver.local", log_json=False,
                        metrics_token=METRICS_TOKEN)
    _, admin = await create_tenant(settings)
    headers = {"Authorization": f"Bearer {admin}"}
    async with AsyncTestClient(app=create_app(settings, clock=clock), base_url="http://testserver.local") as client:
        minted = (await client.post("/v1/keys", json={"name": "before"}, headers=headers)).json()
        # several connections in the pool, all used a moment ago
        got = await asyncio.gather(*[client.get(f"/v1/keys/{minted['id']}", headers=headers) for _ in range(6)])
        assert [r.status_code for r in got] == [200] * 6

        # the event loop runs meanwhile, as a server's does: it sees the old connections end
        await asyncio.to_thread(pg_proc.stop, "fast")
        await asyncio.to_thread(pg_proc.start)

        got = await asyncio.gather(*[client.get(f"/v1/keys/{minted['id']}", headers=headers) for _ in range(6)])
        assert [r.status_code for r in got] == [200] * 6, [r.text for r in got]
        r = await client.post("/v1/keys", json={"name": "after"}, headers=headers)
        assert r.status_code == 201, r.text
        r = await client.get("/v1/keys?limit=10", headers=headers)
        assert r.status_code == 200 and {k["name"] for k in r.json()["data"]} == {"before", "after"}
