"""Tenant changes reach running replicas (issue 16 item 4): after
``authserver tenant shards`` from the CLI process, every running server serves
the new shards' JWKS and mints into them, without a restart: within 100 ms
with Redis, within the reconcile interval without."""

from __future__ import annotations

import time

import httpx
from _proc import cli, wait_until

PUBLIC = "http://authserver.test"
SHARDS = 4


def shards_served(server, tenant: str = "acme") -> bool:
    return all(
        httpx.get(f"{server.url}/t/{tenant}/shards/{n}/jwks.json", timeout=5).status_code == 200
        for n in range(SHARDS)
    )


def last_shard_served(client: httpx.Client, server) -> bool:
    # the shard count is one field: the last shard served means every shard is
    return client.get(f"{server.url}/t/acme/shards/{SHARDS - 1}/jwks.json").status_code == 200


def grow_and_measure(env: dict[str, str], replicas: list) -> tuple[list[float], float]:
    """Raise acme's shard count from the CLI; how long after the CLI returns
    each replica takes to serve every new shard, and how long the CLI ran."""
    for r in replicas:  # not sharded yet: shard 1.. is unknown
        assert httpx.get(f"{r.url}/t/acme/shards/1/jwks.json", timeout=5).status_code == 404
    delays = []
    # one kept-alive client: a new connection per poll would dominate the measurement
    with httpx.Client(timeout=5) as client:
        for r in replicas:
            assert last_shard_served(client, r) is False
        started = time.perf_counter()
        out = cli(env, "tenant", "shards", "acme", "--count", str(SHARDS), "--json")
        t0 = time.perf_counter()  # the CLI has committed and published by the time it returns
        assert out["shard_count"] == SHARDS
        for r in replicas:
            wait_until(lambda r=r: last_shard_served(client, r), 10, interval=0.002, what="new shards served")
            delays.append(time.perf_counter() - t0)
    for r in replicas:
        assert shards_served(r)
    return delays, t0 - started


def mints_into_new_shards(server, admin: str) -> None:
    minted = []
    for i in range(SHARDS):
        r = httpx.post(f"{server.url}/v1/keys", json={"name": f"k{i}"},
                       headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        assert r.status_code == 201, r.text
        minted.append(r.json())
    # least-loaded placement over the empty shards: one key each
    assert sorted(m["prefix"] for m in minted) == [f"sk_live_s{n}_" for n in range(SHARDS)]
    for m in minted:
        n = int(m["prefix"][len("sk_live_s"):-1])
        doc = httpx.get(f"{server.url}/t/acme/shards/{n}/jwks.json", timeout=5).json()
        assert m["id"] in {k["kid"] for k in doc["keys"]}


def test_shard_change_from_the_cli_reaches_replicas_through_redis(fresh_postgres_url, redis_proc, servers):
    # reconcile far away: only the tenant notice can explain fast propagation
    env = {"AUTHSERVER_DATABASE_URL": fresh_postgres_url, "AUTHSERVER_REDIS_URL": redis_proc.url,
           "AUTHSERVER_PUBLIC_URL": PUBLIC, "AUTHSERVER_LOG_JSON": "false",
           "AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS": "60"}
    admin = cli(env, "tenant", "create", "acme", "--json", "--algorithm", "EdDSA")["admin_key"]
    a, b = servers(env).start(), servers(env).start()
    delays, _ = grow_and_measure(env, [a, b])
    print(f"\ntenant change (CLI -> replicas) over Redis: {', '.join(f'{d * 1000:.1f} ms' for d in delays)}")
    assert max(delays) < 0.1
    mints_into_new_shards(b, admin)
    # and a key minted into a shard on B is served by A's shard JWKS
    r = httpx.post(f"{b.url}/v1/keys", json={"name": "late"}, headers={"Authorization": f"Bearer {admin}"},
                   timeout=30)
    kid, n = r.json()["id"], int(r.json()["prefix"][len("sk_live_s"):-1])
    wait_until(lambda: kid in {k["kid"] for k in httpx.get(f"{a.url}/t/acme/shards/{n}/jwks.json",
                                                           timeout=5).json()["keys"]}, 5, what="key on A")


def test_shard_change_from_the_cli_reaches_a_replica_without_redis(fresh_postgres_url, servers):
    interval = 3.0  # longer than the CLI runs (~2 s), so the reconcile tick is what we wait for
    env = {"AUTHSERVER_DATABASE_URL": fresh_postgres_url, "AUTHSERVER_PUBLIC_URL": PUBLIC,
           "AUTHSERVER_LOG_JSON": "false", "AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS": str(interval)}
    admin = cli(env, "tenant", "create", "acme", "--json", "--algorithm", "EdDSA")["admin_key"]
    a = servers(env).start()
    (delay,), cli_seconds = grow_and_measure(env, [a])
    print(f"\ntenant change (CLI -> replica) by reconcile every {interval} s: {delay * 1000:.1f} ms "
          f"after the CLI returned ({cli_seconds * 1000:.0f} ms run)")
    assert delay < interval + 0.25  # at most one interval after the commit, plus the reread itself
    mints_into_new_shards(a, admin)
