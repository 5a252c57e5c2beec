"""Key lifecycle over HTTP (issue #3): mint, list, get, roll, revoke, expiry,
audit and metrics, each on SQLite and on PostgreSQL."""

from __future__ import annotations

import jwt as pyjwt
import pytest
from _env import METRICS_HEADERS
from _server_helpers import (
    AUD,
    ISS,
    PRIVATE_JWK_MEMBERS,
    all_key_ids,
    bare_jwt,
    is_problem,
    jwks_keys,
    jwks_kids,
    metric,
    mint,
    secret_parts,
    verify_both,
    walk_strings,
)

GATEWAY_CACHE = 300  # Settings.gateway_cache_seconds default
JWKS_PATH_ROOT = "/.well-known/jwks.json"


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA", "PS256"])
async def test_mint_answer_claims_and_independent_verification(client, admin_headers, alg):
    r = await client.post("/v1/keys", json={"name": f"k-{alg}", "algorithm": alg, "scopes": ["read", "write:all"],
                                            "subject": "cus_42", "expires_in": 3600, "metadata": {"plan": "pro"}},
                          headers=admin_headers)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert r.headers["location"] == f"/v1/keys/{body['id']}"
    assert body["key"].startswith("sk_live_eyJ") and body["algorithm"] == alg and body["state"] == "active"
    assert body["gateway_accepts_after"] == body["created_at"] + GATEWAY_CACHE
    assert body["expires_at"] == body["created_at"] + 3600
    assert body["last4"] == body["key"][-4:] and body["metadata"] == {"plan": "pro"}

    header = pyjwt.get_unverified_header(bare_jwt(body["key"]))
    assert header == {"alg": alg, "kid": body["id"], "typ": "JWT"}
    published = {k["kid"]: k for k in await jwks_keys(client)}
    jwk = published[body["id"]]
    assert jwk["alg"] == alg and not PRIVATE_JWK_MEMBERS & jwk.keys()
    claims = verify_both(body["key"], jwk, alg)
    assert claims == {"iss": ISS, "aud": AUD, "sub": "cus_42", "iat": body["created_at"], "jti": body["id"],
                      "scope": "read write:all", "exp": body["expires_at"]}
    # the kid is the RFC 7638 thumbprint of the published key
    from jwcrypto import jwk as jwc_jwk

    assert jwc_jwk.JWK(**jwk).thumbprint() == body["id"]


async def test_mint_defaults_leave_out_scope_and_exp(client, admin_headers):
    body = await mint(client, admin_headers)
    assert body["algorithm"] == "RS256"  # the default algorithm
    jwk = {k["kid"]: k for k in await jwks_keys(client)}[body["id"]]
    claims = verify_both(body["key"], jwk, "RS256")
    assert claims == {"iss": ISS, "aud": AUD, "sub": body["id"], "iat": body["created_at"], "jti": body["id"]}
    assert body["expires_at"] is None and body["scopes"] == [] and body["subject"] == body["id"]


async def test_the_key_is_shown_once_and_nowhere_else(client, admin_headers, clock):
    minted = [await mint(client, admin_headers, name=f"k{i}", algorithm=alg, scopes=["read"])
              for i, alg in enumerate(("RS256", "ES256", "EdDSA"))]
    rolled = (await client.post(f"/v1/keys/{minted[0]['id']}/roll", json={"grace_seconds": 60},
                                headers=admin_headers)).json()
    await client.delete(f"/v1/keys/{minted[1]['id']}", headers=admin_headers)
    secrets = [s for m in (*minted, rolled) for s in secret_parts(m["key"])]
    secrets += secret_parts(admin_headers["Authorization"].split()[1])
    pages = [
        await client.get("/v1/keys", headers=admin_headers),
        await client.get("/v1/keys?state=live", headers=admin_headers),
        await client.get("/v1/keys?state=revoked", headers=admin_headers),
        await client.get("/v1/audit", headers=admin_headers),
        await client.get(JWKS_PATH_ROOT),
        await client.get("/metrics", headers=METRICS_HEADERS),
        *[await client.get(f"/v1/keys/{m['id']}", headers=admin_headers) for m in (*minted, rolled)],
    ]
    for r in pages:
        assert r.status_code == 200
        for secret in secrets:
            assert secret not in r.text
    for r in pages[:4] + pages[6:]:
        for s in walk_strings(r.json()):
            assert not any(secret in s for secret in secrets)
        items = r.json()["data"] if "data" in r.json() else [r.json()]
        assert items and all("key" not in item for item in items)
    # only the mint and roll answers carried it
    assert rolled["key"].startswith("sk_live_") and rolled["previous"]["id"] == minted[0]["id"]
    assert "key" not in rolled["previous"]


async def test_list_paginates_newest_first_without_duplicates(client, admin_headers, clock):
    ids = []
    for i in range(7):
        ids.append((await mint(client, admin_headers, name=f"p{i}", algorithm="EdDSA" if i % 2 else "ES256"))["id"])
        clock.advance(1)
    pages, cursor = [], None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        r = await client.get("/v1/keys", params=params, headers=admin_headers)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append([k["id"] for k in page["data"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    flat = [i for p in pages for i in p]
    assert flat == ids[::-1] and len(set(flat)) == 7
    # exactly a page of 3 left: no empty page after it
    r = await client.get("/v1/keys", params={"limit": "7"}, headers=admin_headers)
    assert r.json()["next_cursor"] is None and len(r.json()["data"]) == 7
    # the same second: the id breaks the tie, still no duplicates or gaps
    for _ in range(5):
        await mint(client, admin_headers, algorithm="EdDSA")
    listed = await all_key_ids(client, admin_headers, limit=2)
    assert len(listed) == len(set(listed)) == 12


async def test_list_filters_by_state(client, admin_headers, clock):
    active = await mint(client, admin_headers, name="active", algorithm="EdDSA")
    revoked = await mint(client, admin_headers, name="revoked", algorithm="EdDSA")
    expiring = await mint(client, admin_headers, name="expiring", algorithm="EdDSA", expires_in=30)
    rolling = await mint(client, admin_headers, name="rolling", algorithm="EdDSA")
    rolled_fast = await mint(client, admin_headers, name="rolled-now", algorithm="EdDSA")
    assert (await client.delete(f"/v1/keys/{revoked['id']}", headers=admin_headers)).status_code == 200
    successor = (await client.post(f"/v1/keys/{rolling['id']}/roll", json={"grace_seconds": 600},
                                   headers=admin_headers)).json()
    successor2 = (await client.post(f"/v1/keys/{rolled_fast['id']}/roll", json={"grace_seconds": 0},
                                    headers=admin_headers)).json()
    clock.advance(31)

    async def listed(state):
        return set(await all_key_ids(client, admin_headers, state=state))

    assert await listed("active") == {active["id"], successor["id"], successor2["id"]}
    assert await listed("rolling") == {rolling["id"]}
    assert await listed("live") == {active["id"], rolling["id"], successor["id"], successor2["id"]}
    assert await listed("revoked") == {revoked["id"]}
    # expired: past exp, or past the end of a roll's grace (state "rolled")
    assert await listed("expired") == {expiring["id"], rolled_fast["id"]}
    assert len(await listed("all")) == 7
    listing = (await client.get("/v1/keys?limit=50", headers=admin_headers)).json()["data"]
    states = {k["id"]: k["state"] for k in listing}
    assert states[expiring["id"]] == "expired" and states[rolled_fast["id"]] == "rolled"
    # live is exactly what the JWKS publishes
    assert await listed("live") == await jwks_kids(client)
    # filter by subject
    r = await client.get("/v1/keys", params={"subject": active["subject"]}, headers=admin_headers)
    assert [k["id"] for k in r.json()["data"]] == [active["id"]]
    for bad in ("bogus", "ACTIVE", "live,revoked", "x" * 300):
        is_problem(await client.get("/v1/keys", params={"state": bad}, headers=admin_headers))
    # admin keys are never listed as API keys
    admin_kid = pyjwt.get_unverified_header(bare_jwt(admin_headers["Authorization"].split()[1]))["kid"]
    assert admin_kid not in await listed("all")


@pytest.mark.parametrize("cursor", ["%%%", "bm9wZQ", "MTIz", "eHg6eXk", "OTk5OTk5OTk5OTk5OTk5OTk5OTk5Ong",
                                    "MTowAA", "LTE6YWJj", "x" * 600, "__--"])
async def test_bad_cursors_are_4xx(client, admin_headers, cursor):
    r = await client.get("/v1/keys", params={"cursor": cursor}, headers=admin_headers)
    body = is_problem(r)
    assert r.status_code in (400, 422), body


async def test_get_unknown_and_malformed_ids(client, admin_headers):
    body = await mint(client, admin_headers, algorithm="EdDSA")
    r = await client.get(f"/v1/keys/{body['id']}", headers=admin_headers)
    assert r.status_code == 200 and r.json()["id"] == body["id"] and "key" not in r.json()
    unknown = "A" * 43
    for method in ("get", "delete"):
        is_problem(await getattr(client, method)(f"/v1/keys/{unknown}", headers=admin_headers), 404)
    is_problem(await client.post(f"/v1/keys/{unknown}/roll", headers=admin_headers), 404)
    for bad in ("x" * 65, "a%00b", "a.b", "%F0%9F%94%91"):
        is_problem(await client.get(f"/v1/keys/{bad}", headers=admin_headers), 400)
        is_problem(await client.delete(f"/v1/keys/{bad}", headers=admin_headers), 400)
    # the admin key itself is not an API key: not visible, not revocable here
    admin_kid = pyjwt.get_unverified_header(bare_jwt(admin_headers["Authorization"].split()[1]))["kid"]
    is_problem(await client.get(f"/v1/keys/{admin_kid}", headers=admin_headers), 404)
    is_problem(await client.delete(f"/v1/keys/{admin_kid}", headers=admin_headers), 404)
    assert (await client.get("/v1/keys", headers=admin_headers)).status_code == 200


async def test_another_tenant_cannot_touch_my_keys(make_settings, tenant, client_factory):
    from _app import create_tenant

    _, other_admin = await create_tenant(make_settings(), "other", algorithm="EdDSA")
    client = await client_factory()
    mine = {"Authorization": f"Bearer {tenant[1]}"}
    theirs = {"Authorization": f"Bearer {other_admin}"}
    body = await mint(client, mine, algorithm="ES256")
    theirs_key = await mint(client, theirs)
    assert theirs_key["key"].startswith("sk_live_") and theirs_key["algorithm"] == "EdDSA"  # the tenant default
    is_problem(await client.get(f"/v1/keys/{body['id']}", headers=theirs), 404)
    is_problem(await client.delete(f"/v1/keys/{body['id']}", headers=theirs), 404)
    is_problem(await client.post(f"/v1/keys/{body['id']}/roll", headers=theirs), 404)
    assert await all_key_ids(client, theirs) == [theirs_key["id"]]
    assert await all_key_ids(client, mine) == [body["id"]]
    assert all(e["target"] != body["id"] for e in (await client.get("/v1/audit", headers=theirs)).json()["data"])
    # each tenant publishes only its own keys, under its own issuer
    assert await jwks_kids(client) == {body["id"]}
    assert await jwks_kids(client, "/t/other/.well-known/jwks.json") == {theirs_key["id"]}
    other_jwk = (await jwks_keys(client, "/t/other/.well-known/jwks.json"))[0]
    verify_both(theirs_key["key"], other_jwk, "EdDSA", audience="api://other",
                issuer="http://testserver.local/t/other")
    # still there, untouched
    r = await client.get(f"/v1/keys/{body['id']}", headers=mine)
    assert r.json()["state"] == "active" and body["id"] in await jwks_kids(client)


async def test_roll_with_grace(client, admin_headers, clock):
    old = await mint(client, admin_headers, name="svc", algorithm="ES256", scopes=["read"], subject="team-a",
                     metadata={"env": "prod"}, rate_limits=[{"limit": 5, "window_seconds": 60}])
    r = await client.post(f"/v1/keys/{old['id']}/roll", json={"grace_seconds": 600}, headers=admin_headers)
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    new = r.json()
    assert new["id"] != old["id"] and new["key"] != old["key"]
    assert new["previous"]["id"] == old["id"] and new["previous"]["state"] == "rolling"
    assert new["previous"]["grace_ends_at"] == old["created_at"] + 600 and new["previous"]["rolled_to"] == new["id"]
    assert new["rolled_from"] == old["id"] and new["state"] == "active"
    for field in ("name", "subject", "scopes", "metadata", "rate_limits", "algorithm"):
        assert new[field] == old[field], field
    published = {k["kid"]: k for k in await jwks_keys(client)}
    assert {old["id"], new["id"]} <= published.keys()
    claims = verify_both(new["key"], published[new["id"]], "ES256")
    assert claims["sub"] == "team-a" and claims["scope"] == "read" and claims["jti"] == new["id"]
    intro = await client.post("/oauth/introspect", data={"token": old["key"]}, headers=admin_headers)
    assert intro.json()["active"] is True and intro.json()["published_until"] == old["created_at"] + 600

    clock.advance(599)  # still within the grace period
    assert {old["id"], new["id"]} <= await jwks_kids(client)
    clock.advance(2)  # past it: pruned lazily at this read
    assert await jwks_kids(client) == {new["id"]}
    intro = await client.post("/oauth/introspect", data={"token": old["key"]}, headers=admin_headers)
    assert intro.json() == {"active": False, "status": "EXPIRED"}
    assert (await client.get(f"/v1/keys/{old['id']}", headers=admin_headers)).json()["state"] == "rolled"
    # a rolled key cannot be rolled again
    is_problem(await client.post(f"/v1/keys/{old['id']}/roll", json={}, headers=admin_headers), 409)


async def test_roll_with_zero_grace_and_conflicts(client, admin_headers, clock):
    a = await mint(client, admin_headers, algorithm="EdDSA")
    r = await client.post(f"/v1/keys/{a['id']}/roll", json={"grace_seconds": 0}, headers=admin_headers)
    b = r.json()
    assert r.status_code == 201 and b["previous"]["state"] == "rolled"
    assert await jwks_kids(client) == {b["id"]}  # the old key left at once
    is_problem(await client.post(f"/v1/keys/{a['id']}/roll", headers=admin_headers), 409)
    # a rolling key (in its grace period) cannot be rolled twice
    c = (await client.post(f"/v1/keys/{b['id']}/roll", json={"grace_seconds": 60}, headers=admin_headers)).json()
    is_problem(await client.post(f"/v1/keys/{b['id']}/roll", headers=admin_headers), 409)
    # revoked and expired keys cannot be rolled
    await client.delete(f"/v1/keys/{c['id']}", headers=admin_headers)
    is_problem(await client.post(f"/v1/keys/{c['id']}/roll", headers=admin_headers), 409)
    e = await mint(client, admin_headers, algorithm="EdDSA", expires_in=10)
    clock.advance(11)
    is_problem(await client.post(f"/v1/keys/{e['id']}/roll", headers=admin_headers), 409)
    # grace bounds: negative and beyond the maximum (30 days) are refused
    f = await mint(client, admin_headers, algorithm="EdDSA")
    for grace in (-1, 30 * 86400 + 1, "60", 1.5):
        is_problem(await client.post(f"/v1/keys/{f['id']}/roll", json={"grace_seconds": grace}, headers=admin_headers))
    assert (await client.get(f"/v1/keys/{f['id']}", headers=admin_headers)).json()["state"] == "active"
    # no body at all: the default grace (a day)
    r = await client.post(f"/v1/keys/{f['id']}/roll", headers=admin_headers)
    assert r.status_code == 201 and r.json()["previous"]["grace_ends_at"] == int(clock()) + 86400


async def test_roll_keeps_a_lifetime_and_accepts_a_new_one(client, admin_headers, clock):
    a = await mint(client, admin_headers, algorithm="EdDSA", expires_in=1000)
    clock.advance(100)
    b = (await client.post(f"/v1/keys/{a['id']}/roll", json={"grace_seconds": 10}, headers=admin_headers)).json()
    assert b["expires_at"] == b["created_at"] + 1000  # the same lifetime, from now
    c = (await client.post(f"/v1/keys/{b['id']}/roll", json={"grace_seconds": 10, "expires_in": 50},
                           headers=admin_headers)).json()
    assert c["expires_at"] == c["created_at"] + 50
    assert pyjwt.decode(bare_jwt(c["key"]), options={"verify_signature": False})["exp"] == c["expires_at"]


async def test_revoke_is_immediate_idempotent_and_final(client, admin_headers, clock):
    keep = await mint(client, admin_headers, algorithm="EdDSA")
    body = await mint(client, admin_headers, algorithm="ES256")
    before = await client.get(JWKS_PATH_ROOT)
    r = await client.delete(f"/v1/keys/{body['id']}", headers=admin_headers)
    assert r.status_code == 200 and r.json()["state"] == "revoked" and r.json()["revoked_at"] == int(clock())
    assert "key" not in r.json()
    after = await client.get(JWKS_PATH_ROOT)
    assert {k["kid"] for k in after.json()["keys"]} == {keep["id"]}
    assert after.headers["etag"] != before.headers["etag"]
    clock.advance(5)
    again = await client.delete(f"/v1/keys/{body['id']}", headers=admin_headers)
    assert again.status_code == 200 and again.json()["revoked_at"] == r.json()["revoked_at"]
    is_problem(await client.delete("/v1/keys/" + "B" * 43, headers=admin_headers), 404)
    # revoking a key in its grace period removes it at once too
    rolled = (await client.post(f"/v1/keys/{keep['id']}/roll", json={"grace_seconds": 3600},
                                headers=admin_headers)).json()
    await client.delete(f"/v1/keys/{keep['id']}", headers=admin_headers)
    assert await jwks_kids(client) == {rolled["id"]}
    events = (await client.get("/v1/audit", headers=admin_headers)).json()["data"]
    assert sum(1 for e in events if e["action"] == "key.revoke" and e["target"] == body["id"]) == 1


async def test_expiry_removes_the_key_and_caps_max_age(client, admin_headers, clock):
    forever = await mint(client, admin_headers, algorithm="EdDSA")
    short = await mint(client, admin_headers, algorithm="ES256", expires_in=45)
    r = await client.get(JWKS_PATH_ROOT)
    assert {forever["id"], short["id"]} == {k["kid"] for k in r.json()["keys"]}
    assert _max_age(r) <= 45
    clock.advance(40)
    r = await client.get(JWKS_PATH_ROOT)
    assert short["id"] in {k["kid"] for k in r.json()["keys"]} and _max_age(r) <= 5
    intro = await client.post("/oauth/introspect", data={"token": short["key"]}, headers=admin_headers)
    assert intro.json()["status"] == "VALID" and intro.json()["exp"] == short["expires_at"]
    clock.advance(5)  # exp == now: the key is gone (exp is exclusive)
    r = await client.get(JWKS_PATH_ROOT)
    assert {k["kid"] for k in r.json()["keys"]} == {forever["id"]}
    assert _max_age(r) == 60  # nothing scheduled any more: the configured max-age
    intro = await client.post("/oauth/introspect", data={"token": short["key"]}, headers=admin_headers)
    assert intro.json() == {"active": False, "status": "EXPIRED"}
    assert (await client.get(f"/v1/keys/{short['id']}", headers=admin_headers)).json()["state"] == "expired"


def _max_age(r) -> int:
    cc = r.headers["cache-control"]
    assert "public" in cc
    return int(cc.split("max-age=")[1].split(",")[0])


async def test_every_change_is_audited_with_actor_and_address(client, admin_headers):
    admin_kid = pyjwt.get_unverified_header(bare_jwt(admin_headers["Authorization"].split()[1]))["kid"]
    a = await mint(client, admin_headers, algorithm="EdDSA", scopes=["x"])
    b = (await client.post(f"/v1/keys/{a['id']}/roll", json={"grace_seconds": 5}, headers=admin_headers)).json()
    await client.delete(f"/v1/keys/{b['id']}", headers=admin_headers)
    await client.delete(f"/v1/keys/{b['id']}", headers=admin_headers)  # idempotent: no second event
    await client.get("/v1/keys", headers=admin_headers)  # reads are not changes
    events = (await client.get("/v1/audit", headers=admin_headers)).json()["data"]
    mine = [e for e in events if e["actor"] == admin_kid]
    assert [(e["action"], e["target"]) for e in mine] == [
        ("key.revoke", b["id"]), ("key.roll", b["id"]), ("key.mint", a["id"])]
    assert all(e["remote_addr"] for e in mine)
    assert mine[1]["details"]["rolled_from"] == a["id"] and mine[1]["details"]["grace_seconds"] == 5
    assert mine[2]["details"]["alg"] == "EdDSA" and mine[2]["details"]["scopes"] == ["x"]
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    # paging like /v1/keys: an opaque cursor in, next_cursor out
    page = (await client.get("/v1/audit", params={"limit": "2"}, headers=admin_headers)).json()
    assert len(page["data"]) == 2 and page["next_cursor"]
    rest = (await client.get("/v1/audit", params={"cursor": page["next_cursor"]}, headers=admin_headers)).json()
    assert [e["id"] for e in page["data"] + rest["data"]] == [e["id"] for e in events]
    assert rest["next_cursor"] is None and rest["next_before_id"] is None
    # the older spelling still works
    assert page["next_before_id"] == page["data"][-1]["id"]
    old = (await client.get("/v1/audit", params={"before_id": page["next_before_id"]}, headers=admin_headers)).json()
    assert old["data"] == rest["data"]
    for bad in ("-1", str(2**64), "abc"):
        is_problem(await client.get("/v1/audit", params={"before_id": bad}, headers=admin_headers), 400)
    keys_cursor = (await client.get("/v1/keys", params={"limit": "1"}, headers=admin_headers)).json()["next_cursor"]
    for bad in ("MToA", "OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk6YWJj", keys_cursor):  # a key list cursor is not one
        is_problem(await client.get("/v1/audit", params={"cursor": bad}, headers=admin_headers), 422)
    # filters: one key, one action
    about_b = (await client.get("/v1/audit", params={"key": b["id"]}, headers=admin_headers)).json()["data"]
    assert [e["action"] for e in about_b] == ["key.revoke", "key.roll"]
    mints = (await client.get("/v1/audit", params={"action": "key.mint"}, headers=admin_headers)).json()["data"]
    assert a["id"] in [e["target"] for e in mints] and {e["action"] for e in mints} == {"key.mint"}
    assert len(mints) == len([e for e in events if e["action"] == "key.mint"])
    for bad in ({"key": "a\x00b"}, {"key": "x" * 65}, {"action": "KEY"}, {"action": "a\x00"}):
        is_problem(await client.get("/v1/audit", params=bad, headers=admin_headers), 400)


async def test_metrics_follow_the_keys(client, admin_headers, clock):
    active = 'tenant="default"'
    assert await metric(client, "authserver_keys_active", active) == 0
    ed = [await mint(client, admin_headers, algorithm="EdDSA") for _ in range(3)]
    await mint(client, admin_headers, algorithm="ES256", expires_in=10)
    assert await metric(client, "authserver_keys_active", active) == 4
    await client.delete(f"/v1/keys/{ed[0]['id']}", headers=admin_headers)
    await client.post(f"/v1/keys/{ed[1]['id']}/roll", json={"grace_seconds": 100}, headers=admin_headers)
    assert await metric(client, "authserver_keys_active", active) == 4  # the rolling key is still live
    clock.advance(11)  # the ES256 key expires
    assert await metric(client, "authserver_keys_active", active) == 3
    clock.advance(100)  # the grace ends
    assert await metric(client, "authserver_keys_active", active) == 2
    assert await metric(client, "authserver_keys_active", active) == len(await all_key_ids(client, admin_headers,
                                                                                            state="live"))
    assert await metric(client, "authserver_mints_total", 'alg="EdDSA",kind="api",tenant="default"') == 4
    assert await metric(client, "authserver_mints_total", 'alg="ES256",kind="api",tenant="default"') == 1
    assert await metric(client, "authserver_revocations_total", active) == 1
    assert await metric(client, "authserver_rolls_total", active) == 1
    await client.delete(f"/v1/keys/{ed[0]['id']}", headers=admin_headers)  # idempotent: not counted twice
    assert await metric(client, "authserver_revocations_total", active) == 1
    assert (await metric(client, "authserver_jwks_bytes", active)) > 0
    await client.get("/v1/keys", headers={"Authorization": "Bearer nope"})
    text = (await client.get("/metrics", headers=METRICS_HEADERS)).text
    assert "authserver_auth_failures_total" in text


async def test_server_timing_only_when_set(tenant, client_factory, admin_headers):
    """AUTHSERVER_SERVER_TIMING: a mint answers with its stages (the benchmark's
    breakdown); off by default, since it tells callers about our internals."""
    plain = await client_factory()
    r = await plain.post("/v1/keys", json={}, headers=admin_headers)
    assert r.status_code == 201 and "server-timing" not in r.headers
    timed = await client_factory(server_timing=True)
    r = await timed.post("/v1/keys", json={}, headers=admin_headers)
    assert r.status_code == 201
    stages = dict(part.strip().split(";dur=") for part in r.headers["server-timing"].split(","))
    assert list(stages) == ["auth", "keygen", "db", "publish", "respond"]
    assert all(float(ms) >= 0 for ms in stages.values())
    # other answers carry no header: only the mint marks stages
    assert "server-timing" not in (await timed.get("/v1/keys", headers=admin_headers)).headers


async def test_relaxed_durability_mints_alike(tenant, client_factory, admin_headers):
    """AUTHSERVER_DURABLE_MINTS=false changes only when the commit returns: the
    key, its audit event and its JWK are there as with durable mints."""
    client = await client_factory(durable_mints=False)
    r = await client.post("/v1/keys", json={"name": "fast"}, headers=admin_headers)
    assert r.status_code == 201, r.text
    kid = r.json()["id"]
    assert (await client.get(f"/v1/keys/{kid}", headers=admin_headers)).json()["name"] == "fast"
    audit = (await client.get(f"/v1/audit?key={kid}", headers=admin_headers)).json()["data"]
    assert [e["action"] for e in audit] == ["key.mint"]
    assert kid in await jwks_kids(client, JWKS_PATH_ROOT)
