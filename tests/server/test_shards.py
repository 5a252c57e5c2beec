"""JWKS shards (issue #7): keys carry their shard in the prefix; shards only grow."""

from __future__ import annotations

import jwt as pyjwt
import pytest
from _server_helpers import sharded_tenant

from authserver.offline import open_core


@pytest.fixture
async def sharded(make_settings):
    return await sharded_tenant(make_settings(), 3)


async def kids_of(client, path):
    r = await client.get(path)
    assert r.status_code == 200, r.text
    return {k["kid"] for k in r.json()["keys"]}


async def test_keys_spread_over_shards_and_route_by_prefix(sharded, client_factory):
    client = await client_factory()
    h = {"Authorization": f"Bearer {sharded}"}
    minted = []
    for i in range(9):
        r = await client.post("/v1/keys", json={"name": f"k{i}"}, headers=h)
        assert r.status_code == 201, r.text
        minted.append(r.json())
    by_shard: dict[int, set[str]] = {0: set(), 1: set(), 2: set()}
    for m in minted:
        prefix = m["prefix"]
        assert prefix.startswith("sk_live_s") and m["key"].startswith(prefix)
        by_shard[int(prefix[len("sk_live_s"):-1])].add(m["id"])
    assert all(len(v) == 3 for v in by_shard.values())  # least-loaded placement
    for n, expected in by_shard.items():
        assert await kids_of(client, f"/t/default/shards/{n}/jwks.json") == expected
    # each key verifies (independently) against its own shard's JWKS only
    for m in minted:
        n = int(m["prefix"][len("sk_live_s"):-1])
        doc = (await client.get(f"/t/default/shards/{n}/jwks.json")).json()
        jwk = next(k for k in doc["keys"] if k["kid"] == m["id"])
        pyjwt.decode(m["key"][len(m["prefix"]):], pyjwt.PyJWK(jwk).key, algorithms=["EdDSA"],
                     audience="api://default")
    # the main JWKS holds no sharded key: just the sentinel
    main = await kids_of(client, "/t/default/.well-known/jwks.json")
    assert not main & {m["id"] for m in minted} and len(main) == 1
    assert (await client.get("/t/default/shards/3/jwks.json")).status_code == 404
    # revocation leaves the shard at once
    victim = minted[0]
    await client.delete(f"/v1/keys/{victim['id']}", headers=h)
    n = int(victim["prefix"][len("sk_live_s"):-1])
    assert victim["id"] not in await kids_of(client, f"/t/default/shards/{n}/jwks.json")
    # introspection works for sharded keys
    r = await client.post("/oauth/introspect", data={"token": minted[1]["key"]}, headers=h)
    assert r.json()["active"] is True


async def test_shards_only_grow_and_old_keys_keep_working(make_settings, client_factory):
    from authserver.errors import Conflict
    from authserver.services import Actor, KeySpec

    settings = make_settings()
    async with open_core(settings) as core:
        _, admin = await core.tenants.create_tenant("default", algorithm="ES256")
        _, old = await core.lifecycle.mint("default", KeySpec(name="unsharded"), Actor("t"))
        await core.tenants.set_shard_count("default", 2, Actor("t"))
        row, in_shard = await core.lifecycle.mint("default", KeySpec(name="s"), Actor("t"))
        assert row.shard == 0 and in_shard.key.startswith("sk_live_s0_")
        await core.tenants.set_shard_count("default", 4, Actor("t"))
        with pytest.raises(Conflict):
            await core.tenants.set_shard_count("default", 3, Actor("t"))
    client = await client_factory()
    assert old.kid in await kids_of(client, "/.well-known/jwks.json")  # unsharded key stays in the main JWKS
    assert row.id in await kids_of(client, "/t/default/shards/0/jwks.json")
    for n in range(4):
        assert (await client.get(f"/t/default/shards/{n}/jwks.json")).status_code == 200
    h = {"Authorization": f"Bearer {admin.key}"}
    for token in (old.key, in_shard.key):
        r = await client.post("/oauth/introspect", data={"token": token}, headers=h)
        assert r.json()["status"] == "VALID"


def test_cli_sets_shards_and_refuses_to_shrink(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "authserver", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    assert run("tenant", "create", "acme", "--json").returncode == 0
    assert run("tenant", "shards", "acme", "--count", "4").returncode == 0
    shrink = run("tenant", "shards", "acme", "--count", "2")
    assert shrink.returncode == 2 and "only grow" in shrink.stderr and "Traceback" not in shrink.stderr
    out = run("keys", "mint", "--tenant", "acme", "--json")
    assert '"prefix": "sk_live_s0_"' in out.stdout
