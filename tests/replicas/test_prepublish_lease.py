"""Instant activation after a kill -9 (issue 16 item 9): the dead replica's
pre-published public keys (their private halves died with it) leave the
survivor's JWKS when their lease runs out, not 6 h later; the survivor's own
pre-published keys stay, and keys the dead replica issued are unaffected."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from _db import query_sql
from _proc import cli, wait_until

LEASE = 6.0


def kids(server) -> set[str]:
    r = httpx.get(f"{server.url}/.well-known/jwks.json", timeout=5)
    assert r.status_code == 200
    return {k["kid"] for k in r.json()["keys"]}


def pending_by_owner(database_url: str) -> dict[str, set[str]]:
    rows = asyncio.run(query_sql(database_url, "SELECT id, metadata FROM api_keys WHERE kind = 'pending'"))
    owners: dict[str, set[str]] = {}
    for kid, meta in rows:
        meta = json.loads(meta) if isinstance(meta, str) else meta
        owners.setdefault(meta["owner"], set()).add(kid)
    return owners


def test_a_killed_replicas_prepublished_keys_leave_the_jwks_within_the_lease(fresh_postgres_url, servers):
    db = fresh_postgres_url
    env = {
        "AUTHSERVER_DATABASE_URL": db, "AUTHSERVER_PUBLIC_URL": "http://authserver.test",
        "AUTHSERVER_LOG_JSON": "false", "AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS": "0.5",
        "AUTHSERVER_INSTANT_ACTIVATION": "true", "AUTHSERVER_INSTANT_ACTIVATION_POOL_SIZE": "3",
        "AUTHSERVER_INSTANT_ACTIVATION_LEASE_SECONDS": str(LEASE), "AUTHSERVER_GATEWAY_CACHE_SECONDS": "1",
    }
    admin = cli(env, "tenant", "create", "default", "--json", "--algorithm", "EdDSA")["admin_key"]
    headers = {"Authorization": f"Bearer {admin}"}
    a = servers(env).start()
    wait_until(lambda: sum(map(len, pending_by_owner(db).values())) == 3, 20, what="A pre-publishes 3 keys")
    (owner_a,) = pending_by_owner(db)
    b = servers(env).start()
    wait_until(lambda: len(pending_by_owner(db)) == 2 and all(len(v) == 3 for v in pending_by_owner(db).values()),
               20, what="B pre-publishes 3 keys")
    (owner_b,) = set(pending_by_owner(db)) - {owner_a}
    # keys A issues, from its pre-published keypairs once they are old enough (gateway cache + 5 s)
    time.sleep(6.5)
    issued = []
    for n in range(2):
        r = httpx.post(f"{a.url}/v1/keys", json={"name": f"on-a-{n}"}, headers=headers, timeout=30)
        assert r.status_code == 201, r.text
        issued.append(r.json())
    assert any(k["published_at"] < k["created_at"] for k in issued)  # at least one was pre-published
    wait_until(lambda: len(pending_by_owner(db).get(owner_a, ())) == 3, 20, what="A refills its pool")
    # leases are renewed: all of them stay published well past one lease
    time.sleep(LEASE + 1)
    owners = pending_by_owner(db)
    pending_a, pending_b = owners[owner_a], owners[owner_b]
    assert pending_a | pending_b <= kids(b) and pending_a | pending_b <= kids(a)

    a.kill()  # SIGKILL: no shutdown code runs
    killed = time.monotonic()
    wait_until(lambda: not pending_a & kids(b), LEASE + 5, interval=0.1, what="A's pending keys leave B's JWKS")
    gone_after = time.monotonic() - killed
    print(f"\nthe killed replica's pre-published keys left the survivor's JWKS {gone_after:.1f} s after the kill "
          f"(lease {LEASE:.0f} s)")
    assert gone_after <= LEASE + 2
    # and their rows are deleted by the survivor
    wait_until(lambda: owner_a not in pending_by_owner(db), 5, what="A's pending rows deleted")
    # B's own keep being renewed: still there two leases later
    time.sleep(LEASE)
    still = kids(b)
    assert pending_b <= still, pending_b - still
    assert pending_by_owner(db)[owner_b] == pending_b
    # the keys A issued are untouched: published, and valid on B
    for key in issued:
        assert key["id"] in still
        r = httpx.post(f"{b.url}/oauth/introspect", data={"token": key["key"]}, headers=headers, timeout=10)
        assert r.json()["status"] == "VALID", r.text
