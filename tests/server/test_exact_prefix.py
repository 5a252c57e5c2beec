"""Bug 3: a key is valid only with the exact prefix it was minted with (the
tenant prefix plus its own shard; ``sk_admin_`` only for admin keys)."""

from __future__ import annotations

import pytest
from _server_helpers import sharded_tenant


def _jwt(key: str) -> str:
    return key[key.index("eyJ"):]


async def _introspect(client, headers, token: str) -> str:
    r = await client.post("/oauth/introspect", data={"token": token}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["status"]


async def test_an_api_key_with_another_prefix_is_invalid(client, admin_headers):
    r = await client.post("/v1/keys", json={"name": "k"}, headers=admin_headers)
    key = r.json()["key"]
    assert key.startswith("sk_live_")
    assert await _introspect(client, admin_headers, key) == "VALID"
    jwt = _jwt(key)
    for prefix in ("sk_admin_", "sk_test_", "zz_", "sk_live_sk_live_", "sk_live_s0_"):
        assert await _introspect(client, admin_headers, prefix + jwt) == "INVALID", prefix


async def test_a_revoked_key_with_another_prefix_is_invalid_not_revoked(client, admin_headers):
    r = await client.post("/v1/keys", json={"name": "k"}, headers=admin_headers)
    key = r.json()["key"]
    assert (await client.delete(f"/v1/keys/{r.json()['id']}", headers=admin_headers)).status_code == 200
    assert await _introspect(client, admin_headers, key) == "REVOKED"
    assert await _introspect(client, admin_headers, "sk_test_" + _jwt(key)) == "INVALID"


@pytest.fixture
async def sharded(make_settings):
    return await sharded_tenant(make_settings(), 2)


async def test_a_sharded_key_needs_its_own_shard(sharded, client_factory):
    client = await client_factory()
    h = {"Authorization": f"Bearer {sharded}"}
    r = await client.post("/v1/keys", json={"name": "k"}, headers=h)
    key, prefix = r.json()["key"], r.json()["prefix"]
    assert prefix in ("sk_live_s0_", "sk_live_s1_")
    assert await _introspect(client, h, key) == "VALID"
    other = "sk_live_s1_" if prefix == "sk_live_s0_" else "sk_live_s0_"
    for wrong in (other, "sk_live_s99_", "sk_live_", "sk_admin_"):
        assert await _introspect(client, h, wrong + _jwt(key)) == "INVALID", wrong


async def test_an_admin_key_with_the_api_prefix_is_refused(client, tenant, admin_headers):
    admin_key = tenant[1]
    assert admin_key.startswith("sk_admin_")
    for prefix in ("sk_live_", "sk_test_", "zz_", "sk_admin_sk_admin_"):
        h = {"Authorization": f"Bearer {prefix}{_jwt(admin_key)}"}
        r = await client.get("/v1/keys", headers=h)
        assert r.status_code == 401, (prefix, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/v1/keys", headers=admin_headers)).status_code == 200
