"""The live key cap under concurrency (issue 16 item 7): parallel mints and
rolls spread over two real replicas on one database (SQLite file,
PostgreSQL) never go past it."""

from __future__ import annotations

import asyncio

import httpx
from _db import query_sql
from _proc import cli

CAP = 7
PARALLEL = 24


async def _burst(urls: list[str], admin: str, database_url: str) -> None:
    headers = {"Authorization": f"Bearer {admin}"}
    clients = [httpx.AsyncClient(base_url=u, headers=headers, timeout=60, limits=httpx.Limits(max_connections=PARALLEL))
               for u in urls]
    live = "SELECT id FROM api_keys WHERE kind = 'api' AND revoked_at IS NULL AND grace_ends_at IS NULL"
    try:
        answers = await asyncio.gather(*(clients[n % 2].post("/v1/keys", json={"name": f"m{n}"})
                                         for n in range(PARALLEL)))
        codes = sorted(a.status_code for a in answers)
        assert codes == [201] * CAP + [409] * (PARALLEL - CAP), codes
        assert all(a.json()["code"] == "quota_exceeded" for a in answers if a.status_code == 409)
        minted = {a.json()["id"] for a in answers if a.status_code == 201}
        assert {r[0] for r in await query_sql(database_url, live)} == minted
        # at the cap, parallel rolls with grace (each would add a live key) are all refused
        kids = sorted(minted)
        answers = await asyncio.gather(*(clients[n % 2].post(f"/v1/keys/{kid}/roll", json={"grace_seconds": 60})
                                         for n, kid in enumerate(kids)))
        assert [a.status_code for a in answers] == [409] * CAP
        # two places freed: of 10 parallel mints exactly two get in
        for kid in kids[:2]:
            assert (await clients[0].delete(f"/v1/keys/{kid}")).status_code == 200
        answers = await asyncio.gather(*(clients[n % 2].post("/v1/keys", json={}) for n in range(10)))
        assert sorted(a.status_code for a in answers) == [201] * 2 + [409] * 8
        assert len(await query_sql(database_url, live)) == CAP
    finally:
        for c in clients:
            await c.aclose()


def test_parallel_mints_on_two_replicas_never_pass_the_cap(database_url, servers):
    env = {
        "AUTHSERVER_DATABASE_URL": database_url, "AUTHSERVER_PUBLIC_URL": "http://authserver.test",
        "AUTHSERVER_LOG_JSON": "false", "AUTHSERVER_LOG_LEVEL": "WARNING",
        "AUTHSERVER_RATE_LIMIT_ADMIN_PER_MINUTE": "0",
    }
    admin = cli(env, "tenant", "create", "default", "--json", "--algorithm", "EdDSA")["admin_key"]
    assert cli(env, "tenant", "quota", "default", "--max-live-keys", str(CAP), "--json")["max_live_keys"] == CAP
    a, b = servers(env).start(), servers(env).start()
    asyncio.run(_burst([a.url, b.url], admin, database_url))
