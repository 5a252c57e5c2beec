"""Admin credentials and introspection (issue #3), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json

import pytest
from _server_helpers import ISS, bare_jwt, is_problem, kid_of, mint, on_app_loop

MANAGEMENT_CALLS = [
    ("GET", "/v1/keys", None),
    ("POST", "/v1/keys", {}),
    ("GET", "/v1/keys/" + "A" * 43, None),
    ("POST", "/v1/keys/" + "A" * 43 + "/roll", {}),
    ("DELETE", "/v1/keys/" + "A" * 43, None),
    ("GET", "/v1/audit", None),
    ("POST", "/oauth/introspect", {"token": "x"}),
]


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


async def _special_admin_keys(client, clock):
    """An expired, a revoked and a read-only admin key of the default tenant,
    minted on the app's own event loop through the lifecycle service."""
    from authserver.services import Actor, KeySpec

    lifecycle = client.app.state.core.lifecycle
    _, expired = await on_app_loop(client, lifecycle.mint, "default", KeySpec(
        name="short", scopes=["keys:read", "keys:write"], expires_in=60), Actor("test"), kind="admin")
    _, revoked = await on_app_loop(client, lifecycle.mint, "default", KeySpec(
        name="gone", scopes=["keys:read", "keys:write"]), Actor("test"), kind="admin")
    _, read_only = await on_app_loop(client, lifecycle.mint, "default", KeySpec(name="ro", scopes=["keys:read"]),
                                     Actor("test"), kind="admin")
    return expired.key, revoked.key, read_only.key


async def test_every_bad_credential_gets_the_same_401(tenant, client_factory, admin_headers, clock):
    client = await client_factory(rate_limit_auth_failures_per_minute=0)  # ~100 failures below
    expired, revoked, _ = await _special_admin_keys(client, clock)
    # they work before
    for key in (expired, revoked):
        assert (await client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"})).status_code == 200
    lifecycle = client.app.state.core.lifecycle
    from authserver.services import Actor

    await on_app_loop(client, lifecycle.revoke, "default", kid_of(revoked), Actor("test"), kind="admin")
    clock.advance(61)
    api_key = (await mint(client, admin_headers, algorithm="EdDSA"))["key"]
    admin = admin_headers["Authorization"].split()[1]
    header, payload, signature = bare_jwt(admin).split(".")
    forged_payload = _b64({**json.loads(base64.urlsafe_b64decode(payload + "==")), "scope": "keys:read keys:write x"})
    alg_none = "sk_admin_" + _b64({"alg": "none", "kid": kid_of(admin), "typ": "JWT"}) + "." + payload + "."
    credentials = {
        "missing": None,
        "empty bearer": "Bearer ",
        "basic scheme": "Basic " + base64.b64encode(b"admin:admin").decode(),
        "garbage": "Bearer garbage",
        "expired admin key": f"Bearer {expired}",
        "revoked admin key": f"Bearer {revoked}",
        "an API key": f"Bearer {api_key}",
        "API key, admin prefix": "Bearer sk_admin_" + bare_jwt(api_key),
        "admin key, no prefix": f"Bearer {bare_jwt(admin)}",
        "tampered signature": f"Bearer sk_admin_{header}.{payload}.{signature[:-4]}AAAA",
        "tampered claims": f"Bearer sk_admin_{header}.{forged_payload}.{signature}",
        "alg none": f"Bearer {alg_none}",
        "trailing junk": f"Bearer {admin}x",
        "huge": "Bearer " + "a" * 20000,
    }
    first = None
    for label, value in credentials.items():
        for method, path, body in MANAGEMENT_CALLS:
            headers = {"Authorization": value} if value is not None else {}
            r = await client.request(method, path, headers=headers, json=body)
            problem = is_problem(r, 401)
            assert r.headers["www-authenticate"].startswith("Bearer"), label
            first = first or problem
            assert problem == first, (label, method, path, problem)  # no hint which part was wrong
    assert first["code"] == "unauthorized" and first["status"] == 401
    for word in ("expired", "revoked", "signature", "scope", "prefix", "audience", "kid", "tenant", "alg"):
        assert word not in json.dumps(first).lower(), word
    # the good key still works, and nothing above was minted
    r = await client.get("/v1/keys", headers=admin_headers)
    assert r.status_code == 200 and len(r.json()["data"]) == 1


async def test_failed_authentications_are_rate_limited_per_address(tenant, client_factory, admin_headers):
    client = await client_factory(rate_limit_auth_failures_per_minute=5)
    statuses = [(await client.get("/v1/keys", headers={"Authorization": "Bearer nope"})).status_code
                for _ in range(7)]
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
    r = await client.get("/v1/keys", headers={"Authorization": "Bearer nope"})
    is_problem(r, 429)
    assert int(r.headers["retry-after"]) >= 1
    # the budget refuses failures only: the right key from that address still works
    assert (await client.get("/v1/keys", headers=admin_headers)).status_code == 200


async def test_read_only_admin_key_is_403_on_every_write(client, admin_headers, clock):
    _, _, read_only = await _special_admin_keys(client, clock)
    ro = {"Authorization": f"Bearer {read_only}"}
    victim = await mint(client, admin_headers, algorithm="EdDSA")
    assert (await client.get("/v1/keys", headers=ro)).status_code == 200
    assert (await client.get(f"/v1/keys/{victim['id']}", headers=ro)).status_code == 200
    assert (await client.get("/v1/audit", headers=ro)).status_code == 200
    for r in (
        await client.post("/v1/keys", json={"name": "x"}, headers=ro),
        await client.post(f"/v1/keys/{victim['id']}/roll", json={}, headers=ro),
        await client.delete(f"/v1/keys/{victim['id']}", headers=ro),
    ):
        body = is_problem(r, 403)
        assert "keys:write" in body.get("detail", "")
    r = await client.get(f"/v1/keys/{victim['id']}", headers=admin_headers)
    assert r.json()["state"] == "active" and len(await _ids(client, admin_headers)) == 1


async def _ids(client, headers):
    return [k["id"] for k in (await client.get("/v1/keys", headers=headers)).json()["data"]]


async def test_bearer_scheme_is_case_insensitive(client, admin_headers):
    key = admin_headers["Authorization"].split()[1]
    for value in (f"bearer {key}", f"BEARER {key}", f"Bearer  {key} "):
        assert (await client.get("/v1/keys", headers={"Authorization": value})).status_code == 200, value


async def test_introspection_of_a_live_key_form_and_json(client, admin_headers):
    body = await mint(client, admin_headers, scopes=["read", "write"], subject="cus_7", algorithm="ES256",
                      expires_in=600, metadata={"plan": "pro"}, rate_limits=[{"limit": 10, "window_seconds": 60}])
    for kwargs in ({"data": {"token": body["key"]}},
                   {"data": {"token": body["key"], "token_type_hint": "access_token"}},
                   {"json": {"token": body["key"]}},
                   {"content": json.dumps({"token": body["key"]}).encode(),
                    "headers": {"Content-Type": "application/json; charset=utf-8"}}):
        headers = {**admin_headers, **kwargs.pop("headers", {})}
        r = await client.post("/oauth/introspect", headers=headers, **kwargs)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        answer = r.json()
        state = answer.pop("rate_limit_state")  # the window as gateways count it: nothing counted yet
        assert state == [{"limit": 10, "window_seconds": 60, "remaining": 10, "reset_after": state[0]["reset_after"]}]
        assert 1 <= state[0]["reset_after"] <= 60
        assert answer == {
            "active": True, "status": "VALID", "token_type": "api_key", "kid": body["id"], "iss": ISS,
            "aud": "api://default", "sub": "cus_7", "iat": body["created_at"], "exp": body["expires_at"],
            "jti": body["id"], "scope": "read write", "rate_limits": [{"limit": 10, "window_seconds": 60}],
            "metadata": {"plan": "pro"}, "published_until": body["expires_at"],
        }


async def test_introspection_says_why_a_key_is_inactive(client, admin_headers, clock):
    revoked = await mint(client, admin_headers, algorithm="EdDSA")
    expiring = await mint(client, admin_headers, algorithm="EdDSA", expires_in=10)
    rolled = await mint(client, admin_headers, algorithm="EdDSA")
    await client.delete(f"/v1/keys/{revoked['id']}", headers=admin_headers)
    await client.post(f"/v1/keys/{rolled['id']}/roll", json={"grace_seconds": 0}, headers=admin_headers)
    clock.advance(10)
    admin = admin_headers["Authorization"].split()[1]
    live = (await mint(client, admin_headers, algorithm="ES256"))["key"]
    h, p, s = bare_jwt(live).split(".")
    cases = {
        revoked["key"]: "REVOKED",
        expiring["key"]: "EXPIRED",
        rolled["key"]: "EXPIRED",
        "garbage": "INVALID",
        "sk_live_": "INVALID",
        "sk_live_nope.nope.nope": "INVALID",
        admin: "INVALID",  # an admin key is not an API key
        f"sk_live_{h}.{p}.{s[:-4]}AAAA": "INVALID",  # tampered signature
        f"sk_live_{h}.{p}.{s}A": "INVALID",  # one extra character (Envoy accepts this; we must not)
        "sk_live_" + _b64({"alg": "ES256", "kid": "a\x00b", "typ": "JWT"}) + f".{p}.{s}": "INVALID",
        "sk_live_" + _b64({"alg": "ES256", "kid": "k" * 500, "typ": "JWT"}) + f".{p}.{s}": "INVALID",
        "sk_live_" + _b64({"alg": "none", "kid": kid_of(live), "typ": "JWT"}) + f".{p}.": "INVALID",
        "sk_live_" + "A" * 60000: "INVALID",
    }
    for token, status in cases.items():
        for kwargs in ({"data": {"token": token}}, {"json": {"token": token}}):
            r = await client.post("/oauth/introspect", headers=admin_headers, **kwargs)
            assert r.status_code == 200, (token[:40], r.text)
            assert r.json() == {"active": False, "status": status}, token[:60]
    # the live one is still fine
    r = await client.post("/oauth/introspect", data={"token": live}, headers=admin_headers)
    assert r.json()["active"] is True


async def test_introspection_needs_an_admin_key_and_a_token(client, admin_headers):
    body = await mint(client, admin_headers, algorithm="EdDSA")
    for headers in ({}, {"Authorization": f"Bearer {body['key']}"}, {"Authorization": "Bearer x"}):
        is_problem(await client.post("/oauth/introspect", data={"token": body["key"]}, headers=headers), 401)
    for kwargs in ({"data": {}}, {"data": {"token": ""}}, {"json": {}}, {"json": {"token": 5}},
                   {"json": ["token"]}, {"json": {"token": None}},
                   {"content": b"{", "headers": {"Content-Type": "application/json"}},
                   {"content": b"token=abc", "headers": {"Content-Type": "text/plain"}},
                   {"content": b'{"token": "\xff"}', "headers": {"Content-Type": "application/json"}},
                   {"content": b"[" * 5000, "headers": {"Content-Type": "application/json"}},
                   {"content": b'--x\r\nContent-Disposition: form-data; name="token"\r\n\r\n\xff\xfe\r\n--x--\r\n',
                    "headers": {"Content-Type": "multipart/form-data; boundary=x"}}):
        headers = {**admin_headers, **kwargs.pop("headers", {})}
        r = await client.post("/oauth/introspect", headers=headers, **kwargs)
        assert 400 <= r.status_code < 500, (kwargs, r.status_code, r.text)
        is_problem(r)
    is_problem(await client.get("/oauth/introspect", headers=admin_headers), 405)


async def test_introspection_is_per_tenant(make_settings, tenant, client_factory):
    from _app import create_tenant

    _, other_admin = await create_tenant(make_settings(), "other")
    client = await client_factory()
    mine = await mint(client, {"Authorization": f"Bearer {tenant[1]}"}, algorithm="EdDSA")
    r = await client.post("/oauth/introspect", data={"token": mine["key"]},
                          headers={"Authorization": f"Bearer {other_admin}"})
    assert r.json() == {"active": False, "status": "INVALID"}  # not even "revoked": it is not theirs


@pytest.mark.parametrize("scopes", [["keys:read"], []])
async def test_read_only_or_scopeless_admin_keys_can_still_introspect(client, admin_headers, scopes):
    """Introspection asks only for a valid admin key of the tenant, no scope."""
    from authserver.services import Actor, KeySpec

    _, admin = await on_app_loop(client, client.app.state.core.lifecycle.mint, "default", KeySpec(scopes=scopes),
                                 Actor("t"), kind="admin")
    body = await mint(client, admin_headers, algorithm="EdDSA")
    r = await client.post("/oauth/introspect", data={"token": body["key"]},
                          headers={"Authorization": f"Bearer {admin.key}"})
    assert r.status_code == 200 and r.json()["active"] is True
    if "keys:read" not in scopes:
        is_problem(await client.get("/v1/keys", headers={"Authorization": f"Bearer {admin.key}"}), 403)
