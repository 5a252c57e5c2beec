"""The public side (issue #3): JWKS serving (ETag, 304, gzip, Cache-Control,
sentinel) and the discovery documents, on SQLite and on PostgreSQL."""

from __future__ import annotations

import gzip
import json

import pytest
from _server_helpers import ISS, PRIVATE_JWK_MEMBERS, is_problem, jwks_keys, jwks_kids, mint

TENANT_JWKS = "/t/default/.well-known/jwks.json"
ROOT_JWKS = "/.well-known/jwks.json"


async def raw_get(client, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """The bytes on the wire, before httpx would undo a Content-Encoding."""
    async with client.stream("GET", path, headers=headers or {}) as r:
        body = b"".join([chunk async for chunk in r.aiter_raw()])
        return r.status_code, dict(r.headers), body


def max_age(headers) -> int:
    return int(headers["cache-control"].split("max-age=")[1].split(",")[0])


async def test_every_published_jwk_is_public_with_kid_and_alg(client, admin_headers):
    sentinel = await jwks_keys(client)
    minted = [await mint(client, admin_headers, algorithm=alg) for alg in ("RS256", "ES256", "EdDSA", "PS256")]
    published = await jwks_keys(client)
    # sorted by kid (bytes and ETag depend only on the set); the sentinel only when empty
    assert [k["kid"] for k in published] == sorted(m["id"] for m in minted)
    by_kid = {m["id"]: m for m in minted}
    expected = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}
    for jwk in published:
        m = by_kid[jwk["kid"]]
        assert jwk["kid"] == m["id"] and jwk["alg"] == m["algorithm"]
        assert jwk["kty"] == expected[jwk["alg"]]
        assert not PRIVATE_JWK_MEMBERS & jwk.keys(), jwk.keys()
        assert jwk.get("use", "sig") == "sig"
    assert sentinel[0]["kid"] not in {m["id"] for m in minted}


async def test_never_empty_the_sentinel_stands_in(client, admin_headers, clock):
    empty = await jwks_keys(client)
    assert len(empty) == 1
    sentinel = empty[0]
    assert sentinel["kid"] and sentinel["alg"] and not PRIVATE_JWK_MEMBERS & sentinel.keys()
    a = await mint(client, admin_headers, algorithm="EdDSA")
    b = await mint(client, admin_headers, algorithm="ES256", expires_in=5)
    assert await jwks_kids(client) == {a["id"], b["id"]} and sentinel["kid"] not in {a["id"], b["id"]}
    await client.delete(f"/v1/keys/{a['id']}", headers=admin_headers)
    assert await jwks_kids(client) == {b["id"]}
    clock.advance(5)  # the last key expires: the sentinel again, never an empty set
    assert await jwks_keys(client) == [sentinel]
    assert await jwks_keys(client, ROOT_JWKS) == [sentinel]
    # the sentinel verifies nothing: introspection of a token claiming its kid is INVALID
    # (it has no private half anywhere, so no such token can be signed)


async def test_etag_and_conditional_requests(client, admin_headers):
    await mint(client, admin_headers, algorithm="EdDSA")
    r = await client.get(TENANT_JWKS)
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert (await client.get(TENANT_JWKS)).headers["etag"] == etag  # stable while nothing changes
    for inm in (etag, f"W/{etag}", f'"nope", {etag}', f'W/"nope",W/{etag}', "*", f" {etag} "):
        r304 = await client.get(TENANT_JWKS, headers={"If-None-Match": inm})
        assert r304.status_code == 304, inm
        assert r304.content == b"" and r304.headers["etag"] == etag
        assert "max-age=" in r304.headers["cache-control"]
    for inm in ('"nope"', 'W/"nope"', etag[:-2] + '"', "", "garbage"):
        assert (await client.get(TENANT_JWKS, headers={"If-None-Match": inm})).status_code == 200, inm
    # a gzip answer has the same ETag semantics
    status, _, _ = await raw_get(client, TENANT_JWKS, {"If-None-Match": etag, "Accept-Encoding": "gzip"})
    assert status == 304
    # any change: a new ETag, and the old one gets the full document
    await mint(client, admin_headers, algorithm="EdDSA")
    r2 = await client.get(TENANT_JWKS, headers={"If-None-Match": etag})
    assert r2.status_code == 200 and r2.headers["etag"] != etag and len(r2.json()["keys"]) == 2


async def test_gzip_on_request_only(client, admin_headers):
    for alg in ("RS256", "ES256", "EdDSA"):
        await mint(client, admin_headers, algorithm=alg)
    # (httpx sends "Accept-Encoding: gzip, deflate" unless told otherwise)
    status, plain_headers, plain = await raw_get(client, TENANT_JWKS, {"Accept-Encoding": "identity"})
    assert status == 200 and "content-encoding" not in plain_headers
    assert plain_headers["content-type"].startswith("application/json")
    assert "accept-encoding" in plain_headers.get("vary", "").lower()
    document = json.loads(plain)
    for accept in ("gzip", "gzip, deflate, br", "br;q=1.0, gzip;q=0.8", "*", "x-gzip"):
        status, headers, body = await raw_get(client, TENANT_JWKS, {"Accept-Encoding": accept})
        assert status == 200 and headers["content-encoding"] == "gzip", accept
        assert body[:2] == b"\x1f\x8b" and len(body) < len(plain)
        assert gzip.decompress(body) == plain  # the very same bytes
        assert json.loads(gzip.decompress(body)) == document
        assert headers["etag"] == plain_headers["etag"]
    for accept in ("identity", "deflate", "br", "gzip;q=0", "*;q=0", "gzip;q=0, *", "*, gzip;q=0"):
        status, headers, body = await raw_get(client, TENANT_JWKS, {"Accept-Encoding": accept})
        assert status == 200 and "content-encoding" not in headers, accept
        assert body == plain


async def test_head_answers_get_headers_without_a_body(client, admin_headers):
    await mint(client, admin_headers, algorithm="EdDSA")
    for path in (TENANT_JWKS, ROOT_JWKS):
        for accept in ("identity", "gzip"):
            status, get_headers, body = await raw_get(client, path, {"Accept-Encoding": accept})
            head = await client.head(path, headers={"Accept-Encoding": accept})
            assert status == head.status_code == 200 and head.content == b""
            assert int(head.headers["content-length"]) == len(body) == int(get_headers["content-length"])
            for name in ("etag", "cache-control", "vary", "content-type", "x-content-type-options"):
                assert head.headers[name] == get_headers[name], name
            assert head.headers.get("content-encoding") == get_headers.get("content-encoding")
            r304 = await client.head(path, headers={"If-None-Match": get_headers["etag"]})
            assert r304.status_code == 304 and r304.content == b""
    # the fast path leaves everything else to the routes: the same problems as before
    for path in ("/t/nosuch/.well-known/jwks.json", "/t/default/shards/7/jwks.json", "/t/default/shards/x/jwks.json",
                 "/t//.well-known/jwks.json"):
        r = await client.get(path)
        assert r.status_code in (404, 400) and r.headers["content-type"].startswith("application/problem+json"), path
    assert (await client.post(TENANT_JWKS)).status_code == 405


async def test_a_big_set_is_written_in_chunks_that_join_to_the_document(client, admin_headers, tenant):
    """Past a few hundred keys the answer goes out in several writes (one per group of
    segments); the bytes on the wire are the document, identity and gzip alike."""
    import keys
    from authserver.keycache import PublishedKey

    tk = client.app.state["core"].cache.get("default")
    for _ in range(6000):  # pre-published public keys (real ones, nobody holds their private halves)
        jwk = keys.sentinel_jwk("EdDSA")
        tk.put(PublishedKey.from_jwk(jwk, "default", kind="pending", prefix="sk_live_"))
    assert len(tk.jwks().chunks(False)) > 3
    status, _, plain = await raw_get(client, TENANT_JWKS, {"Accept-Encoding": "identity"})
    assert status == 200 and len(json.loads(plain)["keys"]) == 6000
    status, headers, gz = await raw_get(client, TENANT_JWKS, {"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and gzip.decompress(gz) == plain


async def test_max_age_never_runs_past_the_next_removal(client, admin_headers, clock):
    r = await client.get(TENANT_JWKS)
    assert max_age(r.headers) == 60  # AUTHSERVER_JWKS_MAX_AGE_SECONDS
    assert r.headers["cache-control"].startswith("public")
    forever = await mint(client, admin_headers, algorithm="EdDSA")
    assert max_age((await client.get(TENANT_JWKS)).headers) == 60
    rolled = (await client.post(f"/v1/keys/{forever['id']}/roll", json={"grace_seconds": 25},
                                headers=admin_headers)).json()
    soon = await mint(client, admin_headers, algorithm="ES256", expires_in=40)
    assert max_age((await client.get(TENANT_JWKS)).headers) == 25  # the grace end comes first
    clock.advance(20)
    assert max_age((await client.get(TENANT_JWKS)).headers) == 5
    clock.advance(5)
    r = await client.get(TENANT_JWKS)
    assert {k["kid"] for k in r.json()["keys"]} == {rolled["id"], soon["id"]}
    assert max_age(r.headers) == 15  # now the expiry
    clock.advance(14.5)
    assert max_age((await client.get(TENANT_JWKS)).headers) == 0  # under a second left: do not cache
    clock.advance(0.5)
    r = await client.get(TENANT_JWKS)
    assert {k["kid"] for k in r.json()["keys"]} == {rolled["id"]} and max_age(r.headers) == 60


async def test_root_jwks_is_the_default_tenant(make_settings, tenant, client_factory):
    from _app import create_tenant

    await create_tenant(make_settings(), "acme")
    client = await client_factory()
    h = {"Authorization": f"Bearer {tenant[1]}"}
    body = await mint(client, h, algorithm="EdDSA")
    root = await client.get(ROOT_JWKS)
    tenant_doc = await client.get(TENANT_JWKS)
    assert root.content == tenant_doc.content and root.headers["etag"] == tenant_doc.headers["etag"]
    assert {k["kid"] for k in root.json()["keys"]} == {body["id"]}
    acme = await client.get("/t/acme/.well-known/jwks.json")
    assert acme.status_code == 200 and body["id"] not in {k["kid"] for k in acme.json()["keys"]}


@pytest.mark.parametrize("path", [
    "/t/nope/.well-known/jwks.json", "/t/nope/.well-known/openid-configuration",
    "/t/nope/.well-known/oauth-authorization-server", "/.well-known/oauth-authorization-server/t/nope",
    "/t/..%2Fdefault/.well-known/jwks.json", "/t/default%00/.well-known/jwks.json", "/t/DEFAULT/.well-known/jwks.json",
])
async def test_unknown_tenant_is_a_404_problem(client, path):
    is_problem(await client.get(path), 404)


async def test_without_a_default_tenant_the_root_documents_are_404(make_settings, client_factory):
    from _app import create_tenant

    await create_tenant(make_settings(), "acme")
    client = await client_factory()
    for path in (ROOT_JWKS, "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        is_problem(await client.get(path), 404)
    assert (await client.get("/t/acme/.well-known/jwks.json")).status_code == 200


DISCOVERY = [
    "/t/default/.well-known/openid-configuration",
    "/t/default/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
    # RFC 8414 section 3.1: the well-known suffix inserted before the issuer's path
    "/.well-known/oauth-authorization-server/t/default",
    "/.well-known/openid-configuration/t/default",
]


@pytest.mark.parametrize("path", DISCOVERY)
async def test_discovery_documents(client, admin_headers, path):
    body = await mint(client, admin_headers, algorithm="EdDSA")
    r = await client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["issuer"] == ISS == "http://testserver.local/t/default"
    assert doc["jwks_uri"] == f"{ISS}/.well-known/jwks.json"
    assert doc["introspection_endpoint"] == "http://testserver.local/oauth/introspect"
    # every algorithm a key of this tenant may be minted with (it is chosen per key)
    assert doc["id_token_signing_alg_values_supported"] == ["ES256", "EdDSA", "PS256", "RS256"]
    assert doc["response_types_supported"] and doc["subject_types_supported"] == ["public"]
    assert doc["audience"] == "api://default"
    for url_member in ("jwks_uri", "introspection_endpoint", "service_documentation"):
        assert doc[url_member].startswith("http://testserver.local/")
    jwks = await client.get(doc["jwks_uri"].removeprefix("http://testserver.local"))
    assert jwks.status_code == 200 and body["id"] in {k["kid"] for k in jwks.json()["keys"]}
    intro = await client.post(doc["introspection_endpoint"].removeprefix("http://testserver.local"),
                              data={"token": body["key"]}, headers=admin_headers)
    assert intro.json()["active"] is True


async def test_discovery_for_another_tenant(make_settings, tenant, client_factory):
    from _app import create_tenant

    await create_tenant(make_settings(), "acme", algorithm="ES256", audience="https://api.acme.test")
    client = await client_factory()
    for path in ("/t/acme/.well-known/openid-configuration", "/.well-known/oauth-authorization-server/t/acme"):
        doc = (await client.get(path)).json()
        assert doc["issuer"] == "http://testserver.local/t/acme"
        assert doc["jwks_uri"] == "http://testserver.local/t/acme/.well-known/jwks.json"
        assert doc["audience"] == "https://api.acme.test"
        assert "ES256" in doc["id_token_signing_alg_values_supported"]


async def test_discovery_with_authlib(client, monkeypatch):
    """authlib's RFC 8414 validator: every member we publish is valid. validate()
    as a whole demands a token_endpoint, which this server does not have (keys
    are minted by the management API, there is no OAuth grant), so that one
    check is expected to fail and nothing is faked to satisfy it."""
    from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the test server is http
    doc = (await client.get("/t/default/.well-known/oauth-authorization-server")).json()
    meta = AuthorizationServerMetadata(doc)
    failures = {}
    for name in dir(meta):
        if name.startswith("validate_") and callable(getattr(meta, name)):
            try:
                getattr(meta, name)()
            except ValueError as exc:
                failures[name] = str(exc)
    assert failures == {"validate_token_endpoint": '"token_endpoint" is required'}
    with pytest.raises(ValueError, match="token_endpoint"):
        meta.validate()
    # ...and with an https public URL the rest also passes without the insecure-transport switch
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT")
    secure = {k: (v.replace("http://", "https://", 1) if isinstance(v, str) else v) for k, v in doc.items()}
    meta = AuthorizationServerMetadata(secure)
    for name in ("validate_issuer", "validate_jwks_uri", "validate_introspection_endpoint",
                 "validate_response_types_supported", "validate_grant_types_supported",
                 "validate_introspection_endpoint_auth_methods_supported", "validate_scopes_supported"):
        getattr(meta, name)()


async def test_public_endpoints_need_no_credential_and_ignore_one(client, admin_headers):
    for h in ({}, {"Authorization": "Bearer garbage"}, admin_headers):
        assert (await client.get(TENANT_JWKS, headers=h)).status_code == 200
        assert (await client.get("/.well-known/openid-configuration", headers=h)).status_code == 200
    assert (await client.get("/healthz")).json()["status"] == "ok"
    # unsupported methods on the JWKS are problems, not stack traces
    is_problem(await client.post(TENANT_JWKS, json={}), 405)
    is_problem(await client.delete(TENANT_JWKS), 405)


async def test_etag_survives_a_restart(tenant, client_factory, admin_headers):
    client = await client_factory()
    for _ in range(8):
        await mint(client, admin_headers, algorithm="EdDSA")
    before = await client.get(TENANT_JWKS)
    await client.__aexit__(None, None, None)
    again = await client_factory()
    after = await again.get(TENANT_JWKS)
    assert {k["kid"] for k in after.json()["keys"]} == {k["kid"] for k in before.json()["keys"]}
    assert after.headers["etag"] == before.headers["etag"]
