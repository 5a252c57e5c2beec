"""Admin keys over the API (issue 16 item 1): /v1/admin-keys, scopes, the last
key, expiry, roll grace, audit; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import jwt as pyjwt
import pytest
from _server_helpers import ISS, bare_jwt, is_problem, jwks_kids, kid_of, mint, on_app_loop

ADMIN_AUD = f"{ISS}/admin"
FULL = ["keys:read", "keys:write", "admin-keys:write"]
NO_KEY = "A" * 43


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def mint_admin(client, headers, expect: int = 201, **body) -> dict:
    r = await client.post("/v1/admin-keys", json=body, headers=headers)
    assert r.status_code == expect, r.text
    return r.json()


def public_jwk(client, kid: str) -> dict:
    """An admin key's public JWK: kept by the server, never in the tenant JWKS."""
    return client.app.state.core.cache.get("default").published[kid].jwk


async def test_mint_contract_and_independent_verification(client, admin_headers, clock):
    r = await client.post("/v1/admin-keys", json={"name": "ops", "scopes": ["keys:read"], "expires_in": 3600},
                          headers=admin_headers)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store" and r.headers["location"] == f"/v1/admin-keys/{r.json()['id']}"
    body = r.json()
    assert body["key"].startswith("sk_admin_eyJ") and body["kind"] == "admin" and body["name"] == "ops"
    assert body["scopes"] == ["keys:read"] and body["expires_at"] == body["created_at"] + 3600
    assert body["state"] == "active" and body["last4"] == body["key"][-4:]
    claims = pyjwt.decode(bare_jwt(body["key"]), pyjwt.PyJWK(public_jwk(client, body["id"])).key,
                          algorithms=[body["algorithm"]], audience=ADMIN_AUD, issuer=ISS)
    assert claims["scope"] == "keys:read" and claims["jti"] == body["id"] == kid_of(body["key"])
    assert claims["exp"] == body["expires_at"]
    # never published for gateways
    assert body["id"] not in await jwks_kids(client)
    # read-only: reads, cannot write keys or manage admin keys
    ro = bearer(body["key"])
    assert (await client.get("/v1/keys", headers=ro)).status_code == 200
    assert (await client.get("/v1/admin-keys", headers=ro)).status_code == 200
    is_problem(await client.post("/v1/keys", json={}, headers=ro), 403)
    is_problem(await client.post("/v1/admin-keys", json={}, headers=ro), 403)
    is_problem(await client.delete(f"/v1/admin-keys/{kid_of(admin_headers['Authorization'])}", headers=ro), 403)
    # defaults: the caller's scopes, no expiry
    full = await mint_admin(client, admin_headers)
    assert full["scopes"] == FULL and full["expires_at"] is None and full["name"] is None
    claims = pyjwt.decode(bare_jwt(full["key"]), pyjwt.PyJWK(public_jwk(client, full["id"])).key,
                          algorithms=[full["algorithm"]], audience=ADMIN_AUD, issuer=ISS)
    assert claims["scope"] == " ".join(FULL) and "exp" not in claims
    # the new full key manages API keys and admin keys
    assert (await mint(client, bearer(full["key"]), algorithm="EdDSA"))["key"].startswith("sk_live_")
    assert (await mint_admin(client, bearer(full["key"]), scopes=["keys:read"]))["scopes"] == ["keys:read"]


async def test_list_get_and_pagination(client, admin_headers, clock):
    first = kid_of(admin_headers["Authorization"])
    ids = [first]
    for i in range(4):
        clock.advance(1)
        ids.append((await mint_admin(client, admin_headers, name=f"a{i}", scopes=["keys:read"]))["id"])
    await mint(client, admin_headers, algorithm="EdDSA")  # an API key: not an admin key
    seen, cursor = [], None
    while True:
        r = await client.get("/v1/admin-keys", params={"limit": 2, **({"cursor": cursor} if cursor else {})},
                             headers=admin_headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["data"]) <= 2 and all("key" not in k and k["kind"] == "admin" for k in page["data"])
        seen += [k["id"] for k in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    got = (await client.get(f"/v1/admin-keys/{ids[1]}", headers=admin_headers)).json()
    assert got["id"] == ids[1] and got["name"] == "a0" and "key" not in got
    await client.delete(f"/v1/admin-keys/{ids[1]}", headers=admin_headers)
    live = (await client.get("/v1/admin-keys?state=live", headers=admin_headers)).json()["data"]
    assert ids[1] not in {k["id"] for k in live} and len(live) == 4
    revoked = (await client.get("/v1/admin-keys?state=revoked", headers=admin_headers)).json()["data"]
    assert [k["id"] for k in revoked] == [ids[1]]
    is_problem(await client.get(f"/v1/admin-keys/{NO_KEY}", headers=admin_headers), 404)
    is_problem(await client.get("/v1/admin-keys?cursor=MToA", headers=admin_headers))
    is_problem(await client.get("/v1/admin-keys/a%00b", headers=admin_headers))
    is_problem(await client.get("/v1/admin-keys?state=nope", headers=admin_headers), 422)


async def test_admin_and_api_key_ids_point_to_each_others_routes(client, admin_headers):
    admin_id = kid_of(admin_headers["Authorization"])
    api = await mint(client, admin_headers, algorithm="EdDSA")
    body = is_problem(await client.delete(f"/v1/keys/{admin_id}", headers=admin_headers), 404)
    assert "admin key" in body["detail"] and "/v1/admin-keys" in body["detail"]
    body = is_problem(await client.delete(f"/v1/admin-keys/{api['id']}", headers=admin_headers), 404)
    assert "API key" in body["detail"] and "/v1/keys" in body["detail"]
    is_problem(await client.post(f"/v1/admin-keys/{api['id']}/roll", json={}, headers=admin_headers), 404)
    # nothing was revoked
    assert (await client.get("/v1/keys", headers=admin_headers)).status_code == 200
    assert api["id"] in await jwks_kids(client)


async def test_no_scope_beyond_the_callers(client, admin_headers):
    manager = await mint_admin(client, admin_headers, scopes=["keys:read", "admin-keys:write"])
    h = bearer(manager["key"])
    body = is_problem(await client.post("/v1/admin-keys", json={"scopes": ["keys:write"]}, headers=h), 403)
    assert "keys:write" in body["detail"]
    is_problem(await client.post("/v1/admin-keys", json={"scopes": FULL}, headers=h), 403)
    assert (await mint_admin(client, h))["scopes"] == ["keys:read", "admin-keys:write"]  # default: its own
    # nor by rolling a wider key
    full_id = kid_of(admin_headers["Authorization"])
    is_problem(await client.post(f"/v1/admin-keys/{full_id}/roll", json={}, headers=h), 403)
    # only admin scopes, known fields, well-typed values
    for bad in ({"scopes": ["root"]}, {"scopes": "keys:read"}, {"expires_in": 0}, {"expires_in": "60"},
                {"name": ""}, {"algorithm": "RS256"}, {"name": "x\x00"}):
        is_problem(await client.post("/v1/admin-keys", json=bad, headers=admin_headers), 400)
    is_problem(await client.post("/v1/admin-keys", content=b"name=x", headers={
        **admin_headers, "Content-Type": "application/x-www-form-urlencoded"}), 415)


async def test_every_route_needs_a_valid_admin_key(client, admin_headers):
    api_key = (await mint(client, admin_headers, algorithm="EdDSA"))["key"]
    calls = [("GET", "/v1/admin-keys", None), ("POST", "/v1/admin-keys", {}), ("GET", f"/v1/admin-keys/{NO_KEY}", None),
             ("POST", f"/v1/admin-keys/{NO_KEY}/roll", {}), ("DELETE", f"/v1/admin-keys/{NO_KEY}", None)]
    for method, path, body in calls:
        for headers in ({}, bearer(api_key), bearer("sk_admin_" + bare_jwt(api_key)), bearer("x")):
            r = await client.request(method, path, json=body, headers=headers)
            is_problem(r, 401)
    scopeless = await mint_admin(client, admin_headers, scopes=[])
    for method, path, body in calls:
        is_problem(await client.request(method, path, json=body, headers=bearer(scopeless["key"])), 403)


async def test_revoke_takes_effect_at_once_and_the_last_manager_stays(client, admin_headers):
    first = kid_of(admin_headers["Authorization"])
    second = await mint_admin(client, admin_headers, name="second")
    h2 = bearer(second["key"])
    assert (await client.get("/v1/admin-keys", headers=h2)).status_code == 200
    revoked = (await client.delete(f"/v1/admin-keys/{second['id']}", headers=admin_headers)).json()
    assert revoked["state"] == "revoked" and revoked["revoked_at"]
    is_problem(await client.get("/v1/admin-keys", headers=h2), 401)  # at once, not at the next reread
    again = await client.delete(f"/v1/admin-keys/{second['id']}", headers=admin_headers)  # idempotent
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked["revoked_at"]

    # the last key that can manage admin keys: 409, and it keeps working
    ro = await mint_admin(client, admin_headers, scopes=["keys:read", "keys:write"])  # cannot manage
    body = is_problem(await client.delete(f"/v1/admin-keys/{first}", headers=admin_headers), 409)
    assert body["code"] == "last_admin_key" and "authserver admin-keys" in body["detail"]
    assert (await client.get("/v1/admin-keys", headers=admin_headers)).status_code == 200
    # a key that cannot manage can go
    assert (await client.delete(f"/v1/admin-keys/{ro['id']}", headers=admin_headers)).status_code == 200
    # with another manager, a key may revoke itself, and stops working at once
    third = await mint_admin(client, admin_headers, name="third")
    mine = await client.delete(f"/v1/admin-keys/{first}", headers=admin_headers)
    assert mine.status_code == 200 and mine.json()["state"] == "revoked"
    is_problem(await client.get("/v1/keys", headers=admin_headers), 401)
    # and now third is the last one
    body = is_problem(await client.delete(f"/v1/admin-keys/{third['id']}", headers=bearer(third["key"])), 409)
    assert body["code"] == "last_admin_key"
    events = (await client.get("/v1/audit", headers=bearer(third["key"]))).json()["data"]
    revokes = [e["target"] for e in events if e["action"] == "admin_key.revoke"]
    assert revokes == [first, ro["id"], second["id"]]
    mints = [e["target"] for e in events if e["action"] == "admin_key.mint"]
    assert mints[0] == third["id"] and second["id"] in mints and first in mints  # the tenant's first, too
    assert all(e["details"]["kind"] == "admin" for e in events if e["action"].startswith("admin_key."))


async def test_two_keys_revoking_each_other_at_once_leave_one(client, admin_headers):
    """Exactly one of two concurrent revocations of the last two managers wins."""
    from authserver.errors import LastAdminKey
    from authserver.services import Actor

    first = kid_of(admin_headers["Authorization"])
    second = (await mint_admin(client, admin_headers))["id"]
    lifecycle = client.app.state.core.lifecycle

    async def both():
        return await asyncio.gather(
            lifecycle.revoke("default", first, Actor(second), kind="admin", keep_last_admin=True),
            lifecycle.revoke("default", second, Actor(first), kind="admin", keep_last_admin=True),
            return_exceptions=True)

    results = await on_app_loop(client, both)
    assert sorted(type(r).__name__ for r in results) == ["ApiKey", "LastAdminKey"], results
    assert any(isinstance(r, LastAdminKey) for r in results)
    page = await on_app_loop(client, client.app.state.core.queries.list_keys, "default", state="live", kind="admin")
    assert len(page.items) == 1 and page.items[0].id in (first, second)  # one survived, the other is revoked


async def test_an_expired_admin_key_is_refused(client, admin_headers, clock):
    short = await mint_admin(client, admin_headers, expires_in=60)
    h = bearer(short["key"])
    assert (await client.get("/v1/admin-keys", headers=h)).status_code == 200
    clock.advance(61)
    is_problem(await client.get("/v1/admin-keys", headers=h), 401)
    is_problem(await client.post("/v1/admin-keys", json={}, headers=h), 401)
    got = (await client.get(f"/v1/admin-keys/{short['id']}", headers=admin_headers)).json()
    assert got["state"] == "expired"
    # an expired key never counts as the one that remains
    body = is_problem(await client.delete(f"/v1/admin-keys/{kid_of(admin_headers['Authorization'])}",
                                          headers=admin_headers), 409)
    assert body["code"] == "last_admin_key"


@pytest.mark.parametrize("grace", [60, 0])
async def test_roll_keeps_the_old_key_for_the_grace_period(client, admin_headers, clock, grace):
    old = await mint_admin(client, admin_headers, name="ci", scopes=["keys:read", "keys:write"], expires_in=7200)
    r = await client.post(f"/v1/admin-keys/{old['id']}/roll", json={"grace_seconds": grace}, headers=admin_headers)
    assert r.status_code == 201, r.text
    new = r.json()
    assert r.headers["cache-control"] == "no-store" and new["key"].startswith("sk_admin_") and new["key"] != old["key"]
    assert new["name"] == "ci" and new["scopes"] == ["keys:read", "keys:write"] and new["rolled_from"] == old["id"]
    assert new["expires_at"] == new["created_at"] + 7200
    assert new["previous"]["id"] == old["id"] and new["previous"]["rolled_to"] == new["id"]
    claims = pyjwt.decode(bare_jwt(new["key"]), pyjwt.PyJWK(public_jwk(client, new["id"])).key,
                          algorithms=[new["algorithm"]], audience=ADMIN_AUD, issuer=ISS)
    assert claims["scope"] == "keys:read keys:write"
    assert (await client.get("/v1/keys", headers=bearer(new["key"]))).status_code == 200
    if grace:
        assert new["previous"]["state"] == "rolling"
        assert (await client.get("/v1/keys", headers=bearer(old["key"]))).status_code == 200
        clock.advance(grace + 1)
    is_problem(await client.get("/v1/keys", headers=bearer(old["key"])), 401)
    assert (await client.get("/v1/keys", headers=bearer(new["key"]))).status_code == 200
    # only an active key rolls; the audit has it
    is_problem(await client.post(f"/v1/admin-keys/{old['id']}/roll", json={}, headers=admin_headers), 409)
    events = (await client.get("/v1/audit", headers=admin_headers)).json()["data"]
    roll = next(e for e in events if e["action"] == "admin_key.roll")
    assert roll["target"] == new["id"] and roll["details"]["rolled_from"] == old["id"]
    assert roll["details"]["grace_seconds"] == grace


async def test_rolling_the_only_manager_keeps_the_tenant_manageable(client, admin_headers, clock):
    first = kid_of(admin_headers["Authorization"])
    r = await client.post(f"/v1/admin-keys/{first}/roll", json={"grace_seconds": 30}, headers=admin_headers)
    new = r.json()
    # the old key, on its way out, may be revoked; the new one may not (it is the last)
    assert (await client.delete(f"/v1/admin-keys/{first}", headers=bearer(new["key"]))).status_code == 200
    is_problem(await client.delete(f"/v1/admin-keys/{new['id']}", headers=bearer(new["key"])), 409)
