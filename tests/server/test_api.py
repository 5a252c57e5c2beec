"""The HTTP API against the contract (issue #3), on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import jwt as pyjwt
from _env import METRICS_HEADERS
from jwcrypto import jwk as jwc_jwk
from jwcrypto import jwt as jwc_jwt

ISS = "http://testserver.local/t/default"
AUD = "api://default"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


async def mint(client, h, **body):
    r = await client.post("/v1/keys", json=body, headers=h)
    assert r.status_code == 201, r.text
    return r.json()


async def jwks(client, path="/t/default/.well-known/jwks.json"):
    r = await client.get(path)
    assert r.status_code == 200
    return r.json()["keys"]


def is_problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"] and body["code"]
    assert "Traceback" not in r.text
    return body


async def test_mint_contract_and_independent_verification(client, admin_headers):
    for alg in ("RS256", "ES256", "EdDSA"):
        body = await mint(client, admin_headers, name=f"k-{alg}", algorithm=alg, scopes=["read", "write"],
                          subject="cus_42", expires_in=3600, metadata={"plan": "pro"})
        assert body["key"].startswith("sk_live_") and body["algorithm"] == alg
        assert body["last4"] == body["key"][-4:] and body["gateway_accepts_after"] >= body["created_at"]
        published = {k["kid"]: k for k in await jwks(client)}
        jwk = published[body["id"]]
        assert jwk["alg"] == alg and not PRIVATE_MEMBERS & jwk.keys()
        token = body["key"][len("sk_live_"):]
        claims = pyjwt.decode(token, pyjwt.PyJWK(jwk).key, algorithms=[alg], audience=AUD, issuer=ISS)
        assert claims == {"iss": ISS, "aud": AUD, "sub": "cus_42", "iat": claims["iat"], "scope": "read write",
                          "exp": body["expires_at"], "jti": body["id"]}
        key = jwc_jwk.JWK(**jwk)
        checked = jwc_jwt.JWT(jwt=token, key=key, algs=[alg], check_claims={"iss": ISS, "aud": AUD})
        assert json.loads(checked.claims)["jti"] == body["id"]
    # defaults: sub = key id, no scope claim, no exp claim
    body = await mint(client, admin_headers)
    claims = pyjwt.decode(body["key"][8:], options={"verify_signature": False})
    assert claims["sub"] == body["id"] and "scope" not in claims and "exp" not in claims


async def test_the_key_string_is_returned_exactly_once(client, admin_headers):
    body = await mint(client, admin_headers, name="once")
    signature = body["key"].rsplit(".", 1)[1]
    r = await client.post("/v1/keys", json={}, headers=admin_headers)
    assert r.headers["cache-control"] == "no-store"
    for path in ("/v1/keys", f"/v1/keys/{body['id']}", "/v1/audit"):
        r = await client.get(path, headers=admin_headers)
        assert r.status_code == 200 and signature not in r.text and "key" not in r.json().get("data", [{}])[0]


async def test_list_paginates_newest_first_and_filters_by_state(client, admin_headers, clock):
    ids = []
    for i in range(7):
        ids.append((await mint(client, admin_headers, name=f"k{i}", algorithm="EdDSA"))["id"])
        clock.advance(1)
    seen, cursor = [], None
    while True:
        q = "/v1/keys?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(q, headers=admin_headers)).json()
        seen += [k["id"] for k in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]
    await client.delete(f"/v1/keys/{ids[0]}", headers=admin_headers)
    await client.post(f"/v1/keys/{ids[1]}/roll", json={"grace_seconds": 600}, headers=admin_headers)

    async def listed(state):
        r = await client.get(f"/v1/keys?state={state}&limit=100", headers=admin_headers)
        return {k["id"] for k in r.json()["data"]}

    assert await listed("revoked") == {ids[0]}
    assert await listed("rolling") == {ids[1]}
    assert ids[1] in await listed("live") and ids[0] not in await listed("live")
    is_problem(await client.get("/v1/keys?state=bogus", headers=admin_headers), 422)
    is_problem(await client.get("/v1/keys?cursor=%%%", headers=admin_headers), 400)  # not even base64url
    is_problem(await client.get("/v1/keys?limit=0", headers=admin_headers), 400)


async def test_roll_keeps_the_old_key_for_the_grace_period(client, admin_headers, clock):
    old = await mint(client, admin_headers, name="rolled", scopes=["read"], algorithm="ES256")
    r = await client.post(f"/v1/keys/{old['id']}/roll", json={"grace_seconds": 300}, headers=admin_headers)
    assert r.status_code == 201
    new = r.json()
    assert new["previous"]["id"] == old["id"] and new["previous"]["state"] == "rolling"
    assert new["rolled_from"] == old["id"] and new["scopes"] == ["read"] and new["name"] == "rolled"
    kids = {k["kid"] for k in await jwks(client)}
    assert {old["id"], new["id"]} <= kids
    # max-age never runs past the next removal
    r = await client.get("/t/default/.well-known/jwks.json")
    assert int(r.headers["cache-control"].split("max-age=")[1]) <= 300
    clock.advance(301)
    kids = {k["kid"] for k in await jwks(client)}
    assert old["id"] not in kids and new["id"] in kids
    is_problem(await client.post(f"/v1/keys/{old['id']}/roll", headers=admin_headers), 409)
    # grace 0: the old key leaves at once
    r = await client.post(f"/v1/keys/{new['id']}/roll", json={"grace_seconds": 0}, headers=admin_headers)
    assert new["id"] not in {k["kid"] for k in await jwks(client)}
    assert r.json()["id"] in {k["kid"] for k in await jwks(client)}
    is_problem(await client.post(f"/v1/keys/{r.json()['id']}/roll", json={"grace_seconds": -1},
                                 headers=admin_headers), 400)


async def test_revoke_is_immediate_and_idempotent(client, admin_headers):
    body = await mint(client, admin_headers, algorithm="EdDSA")
    for _ in range(2):
        r = await client.delete(f"/v1/keys/{body['id']}", headers=admin_headers)
        assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert body["id"] not in {k["kid"] for k in await jwks(client)}
    is_problem(await client.delete("/v1/keys/nope", headers=admin_headers), 404)
    is_problem(await client.post(f"/v1/keys/{body['id']}/roll", headers=admin_headers), 409)


async def test_expired_keys_leave_the_jwks_and_introspect_as_expired(client, admin_headers, clock):
    body = await mint(client, admin_headers, expires_in=60, algorithm="EdDSA")
    assert body["id"] in {k["kid"] for k in await jwks(client)}
    clock.advance(61)
    assert body["id"] not in {k["kid"] for k in await jwks(client)}
    r = await client.post("/oauth/introspect", data={"token": body["key"]}, headers=admin_headers)
    assert r.json() == {"active": False, "status": "EXPIRED"}
    r = await client.get(f"/v1/keys/{body['id']}", headers=admin_headers)
    assert r.json()["state"] == "expired"


async def test_jwks_caching_headers_gzip_and_sentinel(client, admin_headers):
    sentinel = await jwks(client)
    assert len(sentinel) == 1 and sentinel[0]["kid"] and sentinel[0]["alg"]
    body = await mint(client, admin_headers, algorithm="EdDSA")
    assert sentinel[0]["kid"] != body["id"]
    r = await client.get("/t/default/.well-known/jwks.json")
    etag = r.headers["etag"]
    assert etag.startswith('"') and "max-age=" in r.headers["cache-control"]
    assert [k["kid"] for k in r.json()["keys"]] == [body["id"]]  # the sentinel only when empty
    for inm in (etag, f"W/{etag}", f'"x", {etag}', "*"):
        r304 = await client.get("/t/default/.well-known/jwks.json", headers={"If-None-Match": inm})
        assert r304.status_code == 304 and r304.headers["etag"] == etag and not r304.content
    assert (await client.get("/t/default/.well-known/jwks.json", headers={"If-None-Match": '"x"'})).status_code == 200
    raw = await client.get("/t/default/.well-known/jwks.json", headers={"Accept-Encoding": "gzip"})
    assert raw.headers.get("content-encoding") == "gzip"
    assert raw.json() == r.json()  # httpx decodes; test_jwks_http checks the bytes on the wire
    assert (await client.get("/.well-known/jwks.json")).json() == r.json()  # the default tenant
    await client.delete(f"/v1/keys/{body['id']}", headers=admin_headers)
    r2 = await client.get("/t/default/.well-known/jwks.json")
    assert r2.headers["etag"] != etag and r2.json()["keys"] == sentinel
    is_problem(await client.get("/t/nope/.well-known/jwks.json"), 404)


async def test_discovery_documents(client, monkeypatch):
    for path in ("/t/default/.well-known/openid-configuration", "/t/default/.well-known/oauth-authorization-server",
                 "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        doc = (await client.get(path)).json()
        assert doc["issuer"] == ISS
        assert doc["jwks_uri"] == f"{ISS}/.well-known/jwks.json"
        assert doc["introspection_endpoint"].endswith("/oauth/introspect")
        r = await client.get(doc["jwks_uri"].replace("http://testserver.local", ""))
        assert r.status_code == 200
    from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the test server is http
    meta = AuthorizationServerMetadata((await client.get("/t/default/.well-known/oauth-authorization-server")).json())
    # no token or authorization endpoint exists (keys are minted by the management API),
    # so check the members we do serve, each with authlib's own RFC 8414 validator
    for name in ("issuer", "jwks_uri", "scopes_supported", "grant_types_supported", "service_documentation",
                 "introspection_endpoint", "introspection_endpoint_auth_methods_supported"):
        getattr(meta, f"validate_{name}")()


async def test_bad_credentials_all_get_the_same_401(client, admin_headers, clock):
    api_key = (await mint(client, admin_headers, algorithm="EdDSA"))["key"]
    admin = admin_headers["Authorization"].split()[1]
    tampered = admin[:-6] + ("AAAAAA" if not admin.endswith("AAAAAA") else "BBBBBB")
    bodies = []
    for value in (None, "Basic abc", "Bearer ", "Bearer garbage", f"Bearer {api_key}", f"Bearer {tampered}",
                  f"Bearer {admin}x", "Bearer " + "a" * 20000):
        headers = {"Authorization": value} if value else {}
        r = await client.get("/v1/keys", headers=headers)
        bodies.append(is_problem(r, 401))
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert all(b == bodies[0] for b in bodies)


async def test_read_only_admin_key_gets_403_on_writes(make_settings, tenant, client_factory):
    from authserver.offline import open_core
    from authserver.services import Actor, KeySpec

    async with open_core(make_settings()) as core:
        _, ro = await core.lifecycle.mint("default", KeySpec(name="ro", scopes=["keys:read"]), Actor("t"), kind="admin")
    client = await client_factory()
    h = {"Authorization": f"Bearer {ro.key}"}
    assert (await client.get("/v1/keys", headers=h)).status_code == 200
    is_problem(await client.post("/v1/keys", json={}, headers=h), 403)


async def test_tenants_never_see_each_other(make_settings, tenant, client_factory):
    from _app import create_tenant

    _, other_admin = await create_tenant(make_settings(), "other")
    client = await client_factory()
    mine = {"Authorization": f"Bearer {tenant[1]}"}
    theirs = {"Authorization": f"Bearer {other_admin}"}
    body = await mint(client, mine, algorithm="EdDSA")
    is_problem(await client.get(f"/v1/keys/{body['id']}", headers=theirs), 404)
    is_problem(await client.delete(f"/v1/keys/{body['id']}", headers=theirs), 404)
    is_problem(await client.post(f"/v1/keys/{body['id']}/roll", headers=theirs), 404)
    assert (await client.get("/v1/keys", headers=theirs)).json()["data"] == []
    r = await client.post("/oauth/introspect", data={"token": body["key"]}, headers=theirs)
    assert r.json()["active"] is False
    assert body["id"] not in {k["kid"] for k in await jwks(client, "/t/other/.well-known/jwks.json")}
    assert body["id"] in {k["kid"] for k in await jwks(client)}


async def test_introspection(client, admin_headers):
    body = await mint(client, admin_headers, scopes=["read"], rate_limits=[{"limit": 10, "window_seconds": 60}],
                      algorithm="ES256")
    for kwargs in ({"data": {"token": body["key"]}}, {"json": {"token": body["key"]}}):
        r = await client.post("/oauth/introspect", headers=admin_headers, **kwargs)
        answer = r.json()
        assert r.status_code == 200 and answer["active"] is True and answer["status"] == "VALID"
        assert answer["scope"] == "read" and answer["jti"] == body["id"] and answer["iss"] == ISS
        assert answer["rate_limits"] == [{"limit": 10, "window_seconds": 60}]
    garbage = await client.post("/oauth/introspect", data={"token": "sk_live_nope"}, headers=admin_headers)
    assert garbage.json() == {"active": False, "status": "INVALID"}
    await client.delete(f"/v1/keys/{body['id']}", headers=admin_headers)
    r = await client.post("/oauth/introspect", data={"token": body["key"]}, headers=admin_headers)
    assert r.json() == {"active": False, "status": "REVOKED"}
    is_problem(await client.post("/oauth/introspect", data={}, headers=admin_headers), 422)
    is_problem(await client.post("/oauth/introspect", data={"token": body["key"]}), 401)


async def test_bad_input_is_a_4xx_problem_never_a_500(client, admin_headers):
    h = {**admin_headers, "Content-Type": "application/json"}
    cases = [
        b"{", b"[]", b'"x"', b"null", b'{"name": 5}', b'{"unknown": 1}', b'{"scopes": ["a b"]}',
        b'{"scopes": "read"}', b'{"expires_in": 0}', b'{"expires_in": 1e99}', b'{"algorithm": "HS256"}',
        b'{"algorithm": "none"}', b'{"metadata": {"x": "' + b"a" * 5000 + b'"}}',
        b'{"rate_limits": [{"limit": 0, "window_seconds": 1}]}', b'{"subject": ""}', b"{\"name\": \"\\ud800\"}",
    ]
    for raw in cases:
        r = await client.post("/v1/keys", content=raw, headers=h)
        assert 400 <= r.status_code < 500, (raw[:40], r.status_code, r.text)
        is_problem(r, r.status_code)
    r = await client.post("/v1/keys", content=b'{"name": "' + b"a" * 70000 + b'"}', headers=h)
    is_problem(r, 413)
    r = await client.post("/v1/keys", content=b"name=x", headers={**admin_headers,
                                                                   "Content-Type": "application/x-www-form-urlencoded"})
    assert 400 <= r.status_code < 500
    is_problem(await client.get("/v1/keys/" + "x" * 100, headers=admin_headers), 400)
    is_problem(await client.get("/nope"), 404)
    is_problem(await client.put("/v1/keys", headers=admin_headers), 405)
    # nothing was minted by any of that
    assert (await client.get("/v1/keys", headers=admin_headers)).json()["data"] == []


async def test_every_change_is_audited(client, admin_headers):
    admin_kid = pyjwt.get_unverified_header(admin_headers["Authorization"].split()[1][len("sk_admin_"):])["kid"]
    a = await mint(client, admin_headers, algorithm="EdDSA")
    r = (await client.post(f"/v1/keys/{a['id']}/roll", json={"grace_seconds": 10}, headers=admin_headers)).json()
    await client.delete(f"/v1/keys/{r['id']}", headers=admin_headers)
    events = (await client.get("/v1/audit", headers=admin_headers)).json()["data"]
    mine = [(e["action"], e["target"]) for e in events if e["actor"] == admin_kid]
    assert mine == [("key.revoke", r["id"]), ("key.roll", r["id"]), ("key.mint", a["id"])]
    assert all(e["remote_addr"] for e in events if e["actor"] == admin_kid)
    assert events[-1]["action"] == "tenant.create"


async def test_metrics_follow_the_keys(client, admin_headers):
    for _ in range(3):
        last = await mint(client, admin_headers, algorithm="EdDSA")
    await client.delete(f"/v1/keys/{last['id']}", headers=admin_headers)
    text = (await client.get("/metrics", headers=METRICS_HEADERS)).text
    assert 'authserver_keys_active{tenant="default"} 2.0' in text
    assert 'authserver_revocations_total{tenant="default"} 1.0' in text
    assert 'authserver_mints_total{alg="EdDSA",kind="api",tenant="default"} 3.0' in text
    assert "authserver_jwks_bytes" in text


async def test_keys_minted_by_a_clock_ahead_still_work(tenant, client_factory, clock, admin_headers):
    """Another replica (or the CLI) whose clock runs a few seconds ahead minted
    the admin key: its iat is in our future, within the allowed skew."""
    clock.advance(-30)
    client = await client_factory()
    assert (await client.get("/v1/keys", headers=admin_headers)).status_code == 200
    clock.advance(-60)  # beyond the skew: refused like any credential from the future
    assert (await client.get("/v1/keys", headers=admin_headers)).status_code == 401


async def test_search_by_name_subject_or_id_prefix(client, admin_headers):
    a = await mint(client, admin_headers, name="Billing Service", subject="team-billing", algorithm="EdDSA")
    b = await mint(client, admin_headers, name="mobile app", subject="team-mobile", algorithm="EdDSA")

    async def found(q):
        r = await client.get("/v1/keys", params={"q": q}, headers=admin_headers)
        assert r.status_code == 200
        return {k["id"] for k in r.json()["data"]}

    assert await found("billing") == {a["id"]}  # case-insensitive, name or subject
    assert await found("TEAM-") == {a["id"], b["id"]}
    assert await found(b["id"][:10]) == {b["id"]}
    assert await found("%") == set()  # LIKE wildcards are literal
    is_problem(await client.get("/v1/keys", params={"q": "x" * 201}, headers=admin_headers), 400)
