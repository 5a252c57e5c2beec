"""Several replicas against one PostgreSQL and one Redis (issue #4), as real
processes on loopback. Faults use their own throwaway Redis / PostgreSQL."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
from _env import METRICS_HEADERS
from _proc import cli, free_port, wait_until

PUBLIC = "http://authserver.test"


def kids(server) -> set[str]:
    r = httpx.get(f"{server.url}/.well-known/jwks.json", timeout=5)
    assert r.status_code == 200
    return {k["kid"] for k in r.json()["keys"]}


def mint(server, admin: str, **body) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/keys", json=body, headers={"Authorization": f"Bearer {admin}"}, timeout=30)


def propagation(pred, timeout: float = 5.0) -> float:
    t0 = time.perf_counter()
    wait_until(pred, timeout, interval=0.002, what="propagation")
    return time.perf_counter() - t0


@pytest.fixture
def env(fresh_postgres_url, redis_proc):
    e = {
        "AUTHSERVER_DATABASE_URL": fresh_postgres_url,
        "AUTHSERVER_REDIS_URL": redis_proc.url,
        "AUTHSERVER_PUBLIC_URL": PUBLIC,
        "AUTHSERVER_LOG_JSON": "false",
    }
    return e


def test_changes_reach_every_replica_through_redis(env, servers):
    # reconcile far away: only pub/sub can explain fast propagation here
    env = {**env, "AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS": "60"}
    admin = cli(env, "tenant", "create", "default", "--json", "--algorithm", "EdDSA")["admin_key"]
    a, b = servers(env).start(), servers(env).start()
    delays = []
    minted = []
    for i in range(8):
        src, dst = (a, b) if i % 2 == 0 else (b, a)
        r = mint(src, admin, name=f"k{i}")
        assert r.status_code == 201, r.text
        kid = r.json()["id"]
        minted.append(kid)
        delays.append(propagation(lambda kid=kid, dst=dst: kid in kids(dst)))
    for i, kid in enumerate(minted[:4]):
        src, dst = (a, b) if i % 2 else (b, a)
        r = httpx.delete(f"{src.url}/v1/keys/{kid}", headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        assert r.status_code == 200
        delays.append(propagation(lambda kid=kid, dst=dst: kid not in kids(dst)))
    # a roll on one replica: both keys published on the other
    r = httpx.post(f"{a.url}/v1/keys/{minted[5]}/roll", json={"grace_seconds": 0},
                   headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    assert r.status_code == 201
    new = r.json()["id"]
    delays.append(propagation(lambda: new in kids(b) and minted[5] not in kids(b)))
    print(f"\npropagation across replicas: median {statistics.median(delays)*1000:.1f} ms, "
          f"max {max(delays)*1000:.1f} ms over {len(delays)} changes")
    assert statistics.median(delays) < 0.1
    assert kids(a) == kids(b)
    # an admin key minted on A (new tenant created through the CLI) works on B
    other = cli(env, "tenant", "create", "other", "--json")["admin_key"]
    wait_until(lambda: mint(b, other).status_code == 201, 5, what="new tenant known to B")


def test_rate_limits_are_shared_between_replicas(env, servers):
    env = {**env, "AUTHSERVER_RATE_LIMIT_ADMIN_PER_MINUTE": "6", "AUTHSERVER_RATE_LIMIT_AUTH_FAILURES_PER_MINUTE": "4"}
    admin = cli(env, "tenant", "create", "default", "--json", "--algorithm", "EdDSA")["admin_key"]
    a, b = servers(env).start(), servers(env).start()
    h = {"Authorization": f"Bearer {admin}"}
    codes = [httpx.get(f"{(a, b)[i % 2].url}/v1/keys", headers=h).status_code for i in range(9)]
    assert codes[:6] == [200] * 6 and 429 in codes[6:], codes
    r = httpx.get(f"{b.url}/v1/keys", headers=h)
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["Retry-After"]) >= 1 and r.headers["RateLimit-Remaining"] == "0"
    # failed authentications per client address, across replicas
    bad = {"Authorization": "Bearer sk_admin_eyJhbGciOiJFZERTQSJ9.e30.AAAA"}
    codes = [httpx.get(f"{(a, b)[i % 2].url}/v1/keys", headers=bad).status_code for i in range(6)]
    assert codes[:4] == [401] * 4 and codes[-1] == 429, codes


def test_redis_down_degrades_then_recovers(env, servers, redis_proc):
    env = {**env, "AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS": "1"}
    admin = cli(env, "tenant", "create", "default", "--json", "--algorithm", "ES256")["admin_key"]
    a, b = servers(env).start(), servers(env).start()
    k1 = mint(a, admin).json()["id"]
    propagation(lambda: k1 in kids(b), 2)

    redis_proc.stop()
    r = mint(a, admin)
    assert r.status_code == 201, r.text
    k2 = r.json()["id"]
    assert k2 in kids(a)
    r = httpx.delete(f"{a.url}/v1/keys/{k1}", headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    assert r.status_code == 200
    assert k1 not in kids(a)
    # B converges through the short local TTL (reconcile) while Redis is down
    lag = propagation(lambda: k2 in kids(b) and k1 not in kids(b), 5)
    print(f"\ndegraded propagation (Redis down): {lag*1000:.0f} ms")
    metrics = httpx.get(f"{a.url}/metrics", headers=METRICS_HEADERS).text
    assert "authserver_redis_connected 0.0" in metrics
    degraded = [line for line in metrics.splitlines() if line.startswith("authserver_invalidation_degraded_total")]
    assert degraded and float(degraded[0].split()[-1]) >= 1

    # Redis back on the same port: replicas resubscribe, rebuild, and notices flow again
    redis_proc.start()
    for s in (a, b):
        wait_until(lambda s=s: "authserver_redis_connected 1.0" in httpx.get(f"{s.url}/metrics",
                                                                                   headers=METRICS_HEADERS).text, 15,
                   what="resubscribed")
    k3 = mint(b, admin).json()["id"]
    propagation(lambda: k3 in kids(a), 2)
    assert kids(a) == kids(b)


def test_postgres_down_serves_last_snapshot_and_answers_503(pg_proc, servers):
    env = {"AUTHSERVER_DATABASE_URL": pg_proc.url, "AUTHSERVER_PUBLIC_URL": PUBLIC,
           "AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS": "0.5", "AUTHSERVER_LOG_JSON": "false"}
    admin = cli(env, "tenant", "create", "default", "--json", "--algorithm", "EdDSA")["admin_key"]
    s = servers(env).start()
    minted = [mint(s, admin).json()["id"] for _ in range(3)]
    before = httpx.get(f"{s.url}/.well-known/jwks.json").content

    pg_proc.stop()
    wait_until(lambda: httpx.get(f"{s.url}/healthz").json()["database"] == "unreachable", 10, what="db down seen")
    r = httpx.get(f"{s.url}/.well-known/jwks.json")
    assert r.status_code == 200 and r.content == before  # gateways stay up
    r = mint(s, admin, name="during outage")
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "postgres" not in r.text.lower() and "sqlalchemy" not in r.text.lower()
    r = httpx.delete(f"{s.url}/v1/keys/{minted[0]}", headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 503
    assert minted[0] in kids(s)  # nothing changed

    pg_proc.start()
    wait_until(lambda: mint(s, admin).status_code == 201, 20, what="db back")
    live = httpx.get(f"{s.url}/v1/keys?state=live&limit=500", headers={"Authorization": f"Bearer {admin}"}).json()
    live_ids = {k["id"] for k in live["data"]}
    assert "during outage" not in {k["name"] for k in live["data"]}  # nothing half-written
    assert set(minted) <= live_ids
    assert kids(s) == live_ids


def test_sigkill_during_mint_load_loses_no_acknowledged_key(fresh_postgres_url, servers):
    import asyncio

    env = {"AUTHSERVER_DATABASE_URL": fresh_postgres_url, "AUTHSERVER_PUBLIC_URL": PUBLIC,
           "AUTHSERVER_LOG_JSON": "false"}
    admin = cli(env, "tenant", "create", "default", "--json")["admin_key"]
    port = free_port()
    s = servers(env, port=port).start()
    acknowledged: list[str] = []

    async def load() -> None:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {admin}"}, timeout=30) as c:
            async def one(i: int) -> None:
                try:
                    r = await c.post(f"{s.url}/v1/keys", json={"name": f"load{i}"})
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    acknowledged.append(r.json()["id"])

            tasks = [asyncio.create_task(one(i)) for i in range(400)]
            while len(acknowledged) < 25:
                await asyncio.sleep(0.01)
            s.kill()  # SIGKILL mid-load
            await asyncio.gather(*tasks)

    asyncio.run(load())
    assert 25 <= len(acknowledged) < 400
    s2 = servers(env, port=port).start()
    published = kids(s2)
    assert set(acknowledged) <= published
    live = set()
    cursor = None
    while True:
        q = f"{s2.url}/v1/keys?state=live&limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = httpx.get(q, headers={"Authorization": f"Bearer {admin}"}).json()
        live |= {k["id"] for k in page["data"]}
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert published == live  # no JWK without its row, no live row without its JWK
