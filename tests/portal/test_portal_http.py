"""The developer portal over HTTP (Litestar test client), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time

import jwt as pyjwt
from litestar.testing import AsyncTestClient
from portal_helpers import Portal, csrf_of, nonce_of, secret_of, stored_sessions

ISSUER = "http://testserver.local/t/default"


async def jwks_kids(client) -> list[str]:
    r = await client.get("/t/default/.well-known/jwks.json")
    assert r.status_code == 200
    return [k["kid"] for k in r.json()["keys"]]


async def verify(client, key: str) -> dict:
    assert key.startswith("sk_live_")
    token = key[len("sk_live_"):]
    kid = pyjwt.get_unverified_header(token)["kid"]
    jwks = (await client.get("/t/default/.well-known/jwks.json")).json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    return pyjwt.decode(token, pyjwt.PyJWK(jwk).key, algorithms=[jwk["alg"]], audience="api://default", issuer=ISSUER)


def key_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-key-id="([^"]+)"', page)


# --- sign in -----------------------------------------------------------------

async def test_login_page_security_headers_and_no_inline_script(client):
    r = await client.get("/portal/login")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "no-store" in r.headers["cache-control"]
    assert not re.search(r"<script(?![^>]*\bsrc=)", r.text), "inline script"
    assert " style=" not in r.text and "<style" not in r.text
    assert not re.search(r'(src|href)="(https?:)?//', r.text), "external resource"
    for path in ("/portal/static/portal.css", "/portal/static/portal.js", "/portal/static/favicon.svg"):
        s = await client.get(path)
        assert s.status_code == 200, path
        assert s.headers["x-content-type-options"] == "nosniff"


async def test_login_ok_sets_a_strict_session_cookie_without_the_key(client, tenant):
    admin_key = tenant[1]
    r = await client.get("/portal/login")
    r = await client.post("/portal/login", data={"csrf_token": csrf_of(r.text), "admin_key": admin_key},
                          follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/portal/keys"
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("authserver_portal="))
    attrs = session.lower()
    assert "; httponly" in attrs and "; samesite=strict" in attrs and "; path=/;" in attrs + ";"
    assert "; secure" not in attrs  # http public URL: 127.0.0.1 use keeps working
    sid = session.split(";")[0].split("=", 1)[1]
    assert admin_key not in " ".join(cookies) and admin_key.split(".")[2] not in " ".join(cookies)
    # the server-side store holds the kid and tenant, never the key
    stored = await stored_sessions(client)
    assert admin_key.encode() not in stored and admin_key.split(".")[2].encode() not in stored
    assert sid.encode() not in stored and b'"tenant": "default"' in stored
    page = await client.get("/portal/keys")
    assert page.status_code == 200 and "Tenant <strong>default</strong>" in page.text
    # already signed in: the form sends you on
    r = await client.get("/portal/login", follow_redirects=False)
    assert r.status_code == 303


async def test_rejected_sign_in_is_generic_401(client, tenant):
    r = await client.get("/portal/login")
    token = csrf_of(r.text)
    admin_key = tenant[1]
    api = await client.post("/v1/keys", json={"name": "k"}, headers={"Authorization": f"Bearer {admin_key}"})
    wrong = [
        "sk_admin_nonsense",
        admin_key[:-6] + ("AAAAAA" if not admin_key.endswith("AAAAAA") else "BBBBBB"),  # bad signature
        api.json()["key"],  # an API key is not an admin key
        "",
    ]
    bodies = set()
    for candidate in wrong:
        r = await client.post("/portal/login", data={"csrf_token": token, "admin_key": candidate},
                              follow_redirects=False)
        assert r.status_code == 401, candidate
        assert "Sign-in failed. Check the admin key and try again." in r.text
        assert not any(c.startswith("authserver_portal=") for c in r.headers.get_list("set-cookie"))
        assert candidate == "" or candidate not in r.text  # never echoed back
        bodies.add(re.sub(r'value="[^"]*"', "", r.text))
    assert len(bodies) == 1  # no hint which part was wrong
    r = await client.get("/portal/keys", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/portal/login")


async def test_failed_sign_ins_are_rate_limited(tenant, client_factory):
    client = await client_factory(rate_limit_auth_failures_per_minute=3)
    token = csrf_of((await client.get("/portal/login")).text)
    codes = []
    for _ in range(4):
        r = await client.post("/portal/login", data={"csrf_token": token, "admin_key": "sk_admin_x"})
        codes.append(r.status_code)
    assert codes == [401, 401, 401, 429] and "Retry-After" in r.headers


async def test_csrf_missing_or_wrong_is_403(client, tenant, admin_headers):
    # sign-in form without its token
    r = await client.post("/portal/login", data={"admin_key": tenant[1]}, follow_redirects=False)
    assert r.status_code == 403
    # a token without its cookie, or with another browser's cookie
    foreign = csrf_of((await client.get("/portal/login")).text)
    client.cookies.clear()
    r = await client.post("/portal/login", data={"admin_key": tenant[1], "csrf_token": foreign},
                          follow_redirects=False)
    assert r.status_code == 403
    assert csrf_of((await client.get("/portal/login")).text) != foreign
    r = await client.post("/portal/login", data={"admin_key": tenant[1], "csrf_token": foreign},
                          follow_redirects=False)
    assert r.status_code == 403
    # signed in: every POST needs the session's token
    p = Portal(client)
    await p.login(tenant[1])
    minted = (await client.post("/v1/keys", json={"name": "k"}, headers=admin_headers)).json()
    form = await p.get("/portal/keys/new")
    r = await p.post("/portal/keys", {"name": "x", "form_nonce": nonce_of(form.text)}, csrf=False)
    assert r.status_code == 403 and "This form has expired" in r.text
    r = await p.post("/portal/keys", {"name": "x", "form_nonce": nonce_of(form.text), "csrf_token": "forged"})
    assert r.status_code == 403
    for path, data in ((f"/portal/keys/{minted['id']}/revoke", {}),
                       (f"/portal/keys/{minted['id']}/roll", {"grace_value": "1", "grace_unit": "hours"}),
                       ("/portal/logout", {})):
        r = await p.post(path, data, csrf=False)
        assert r.status_code == 403, path
    assert minted["id"] in await jwks_kids(client)  # nothing happened
    keys = (await client.get("/v1/keys", headers=admin_headers)).json()["data"]
    assert [k["id"] for k in keys] == [minted["id"]] and keys[0]["state"] == "active"


async def test_signed_out_requests_go_to_sign_in(client, tenant):
    for path in ("/portal/keys", "/portal/audit", "/portal/keys/new", "/portal"):
        r = await client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
    r = await client.post("/portal/keys", data={"name": "x"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/portal/login")
    # a made-up session cookie is no session
    client.cookies.set("authserver_portal", "made-up", domain="testserver.local")
    r = await client.get("/portal/keys", follow_redirects=False)
    assert r.status_code == 303


async def test_sign_out(portal, client):
    r = await portal.post("/portal/logout", expect=303)
    assert r.headers["location"] == "/portal/login?out=1"
    r = await client.get("/portal/keys", follow_redirects=False)
    assert r.status_code == 303
    assert "You are signed out." in (await client.get("/portal/login?out=1")).text


async def test_revoked_admin_key_ends_the_session(tenant, client_factory, make_settings, clock):
    """The admin key is revoked elsewhere (here: the CLI's code path, its own
    engine): the portal session ends as soon as this replica sees it."""
    import asyncio

    from authserver.offline import open_core
    from authserver.services import Actor

    client = await client_factory(degraded_cache_ttl_seconds=0.1)
    p = Portal(client)
    await p.login(tenant[1])
    kid = pyjwt.get_unverified_header(tenant[1].removeprefix("sk_admin_"))["kid"]
    async with open_core(make_settings()) as core:
        await core.lifecycle.revoke("default", kid, Actor("cli"), kind="admin")
    clock.now = max(clock.now, time.time() + 1)  # the app's clock; the CLI's is the real one
    for _ in range(100):
        r = await client.get("/portal/keys", follow_redirects=False)
        if r.status_code == 303:
            break
        await asyncio.sleep(0.05)
    assert r.status_code == 303 and r.headers["location"] == "/portal/login?ended=1"
    assert "Your session ended" in (await client.get(r.headers["location"])).text
    r = await client.get("/portal/keys", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/portal/login"
    # and the revoked key cannot sign in again
    await p.login(tenant[1], expect=401)


async def test_https_public_url_makes_cookies_secure(tenant, make_settings, clock):
    # (tenant first: the app's frozen clock must not be older than the admin key's iat)
    from authserver.app import create_app

    app = create_app(make_settings(public_url="https://auth.example.com"), clock=clock)
    async with AsyncTestClient(app=app, base_url="https://auth.example.com") as c:
        r = await c.get("/portal/login")
        signin = r.headers["set-cookie"]
        assert signin.startswith("__Host-authserver_portal_signin=") and "; secure" in signin.lower()
        r = await c.post("/portal/login", data={"csrf_token": csrf_of(r.text), "admin_key": tenant[1]},
                         follow_redirects=False)
        assert r.status_code == 303
        session = next(x for x in r.headers.get_list("set-cookie") if x.startswith("__Host-authserver_portal="))
        attrs = session.lower()
        assert "; secure" in attrs and "; httponly" in attrs and "; samesite=strict" in attrs
        assert "; path=/;" in attrs + ";"
        assert (await c.get("/portal/keys")).status_code == 200


# --- keys ----------------------------------------------------------------------

async def test_create_shows_the_key_once(portal, client):
    form = await portal.get("/portal/keys/new")
    nonce = nonce_of(form.text)
    data = {"name": "billing", "subject": "cust_42", "scopes": "read, write  admin:x", "expiry": "days",
            "expiry_days": "30", "form_nonce": nonce}
    r = await portal.post("/portal/keys", data, expect=201)
    assert "no-store" in r.headers["cache-control"]
    assert "You won't see it again" in r.text
    key = secret_of(r.text)
    assert 'type="password"' in r.text.split('id="secret-key"')[1].split(">")[0] or 'type="password" readonly' in r.text
    claims = await verify(client, key)
    assert claims["scope"] == "read write admin:x" and claims["sub"] == "cust_42"
    assert claims["exp"] - claims["iat"] == 30 * 86400
    # nowhere else: not in the list, not in the session, not in a cookie
    listing = await portal.get("/portal/keys")
    assert key not in listing.text and key.split(".")[2] not in listing.text
    assert f"sk_live_…{key[-4:]}" in listing.text and "billing" in listing.text
    assert key_ids(listing.text) == [claims["jti"]]
    stored = await stored_sessions(client)
    assert key.split(".")[2].encode() not in stored
    assert all(key not in c for c in r.headers.get_list("set-cookie"))
    # the same form again (reload, double click) never mints a second key
    r = await portal.post("/portal/keys", data)
    assert r.status_code == 409 and key not in r.text
    assert len(key_ids((await portal.get("/portal/keys")).text)) == 1


async def test_create_rejects_bad_input_and_keeps_the_values(portal):
    r = await portal.create(name="", expect=422)
    assert "Give the key a name" in r.text
    r = await portal.create(name="bad scope", scopes='read "quoted"', expect=422)
    assert "scope" in r.text and 'value="bad scope"' in r.text
    r = await portal.create(name="too long", expiry="days", expiry_days="99999", expect=422)
    assert "between 1 and 3650 days" in r.text
    assert key_ids((await portal.get("/portal/keys")).text) == []


async def test_roll_with_grace_then_without(portal, client, clock):
    first = secret_of((await portal.create(name="svc")).text)
    old_kid = pyjwt.get_unverified_header(first[len("sk_live_"):])["kid"]
    form = await portal.get(f"/portal/keys/{old_kid}/roll")
    assert 'name="grace_value"' in form.text and 'value="24"' in form.text  # default 86400 s as hours
    r = await portal.post(f"/portal/keys/{old_kid}/roll", {"grace_value": "2", "grace_unit": "hours"}, expect=201)
    assert "no-store" in r.headers["cache-control"] and "Key rolled" in r.text
    new_key = secret_of(r.text)
    new_claims = await verify(client, new_key)
    kids = await jwks_kids(client)
    assert old_kid in kids and new_claims["jti"] in kids  # both valid during the grace period
    listing = (await portal.get("/portal/keys")).text
    assert "Rolling" in listing and new_key not in listing
    rows = (await client.get("/v1/keys/" + old_kid, headers={"Authorization": f"Bearer {portal.admin_key}"}))
    assert rows.json()["grace_ends_at"] == int(clock.now) + 7200
    # the rolling one cannot be rolled again
    r = await portal.post(f"/portal/keys/{old_kid}/roll", {"grace_value": "1", "grace_unit": "seconds"})
    assert r.status_code == 409
    # roll the new one with no grace: the replaced key leaves the JWKS at once
    r = await portal.post(f"/portal/keys/{new_claims['jti']}/roll", {"grace_value": "0", "grace_unit": "hours"},
                          expect=201)
    newest = await verify(client, secret_of(r.text))
    kids = await jwks_kids(client)
    assert new_claims["jti"] not in kids and newest["jti"] in kids and old_kid in kids
    clock.advance(7201)
    assert old_kid not in await jwks_kids(client)
    listing = (await portal.get("/portal/keys", state="expired")).text
    assert set(key_ids(listing)) == {old_kid, new_claims["jti"]}
    # bad grace input
    r = await portal.post(f"/portal/keys/{newest['jti']}/roll", {"grace_value": "-1", "grace_unit": "hours"})
    assert r.status_code == 422
    r = await portal.post(f"/portal/keys/{newest['jti']}/roll", {"grace_value": "31", "grace_unit": "days"})
    assert r.status_code == 422


async def test_revoke_is_reflected_in_the_jwks(portal, client):
    key = secret_of((await portal.create(name="to-revoke")).text)
    kid = pyjwt.get_unverified_header(key[len("sk_live_"):])["kid"]
    assert kid in await jwks_kids(client)
    confirm = await portal.get(f"/portal/keys/{kid}/revoke")
    assert "Revoke key?" in confirm.text and "cannot be undone" in confirm.text
    r = await portal.post(f"/portal/keys/{kid}/revoke", expect=303)
    assert r.headers["location"] == "/portal/keys"
    assert kid not in await jwks_kids(client)
    listing = (await portal.get("/portal/keys")).text
    assert "is revoked" in listing and "Revoked" in listing
    assert f"/portal/keys/{kid}/revoke" not in listing  # no action left on it
    # unknown key: a 404 page
    r = await portal.post("/portal/keys/doesnotexist/revoke")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]


async def test_filter_search_and_pagination(portal, client, admin_headers):
    ids = []
    for i in range(23):
        body = {"name": f"svc-{i:02d}" if i % 2 else f"batch-{i:02d}", "subject": f"owner-{i % 3}",
                "algorithm": "ES256"}
        ids.append((await client.post("/v1/keys", json=body, headers=admin_headers)).json()["id"])
    await client.delete(f"/v1/keys/{ids[0]}", headers=admin_headers)
    page1 = (await portal.get("/portal/keys")).text
    assert len(key_ids(page1)) == 20
    nxt = re.search(r'rel="next" href="([^"]+)"', page1).group(1).replace("&amp;", "&")
    page2 = (await portal.get(nxt)).text
    assert len(key_ids(page2)) == 3 and not set(key_ids(page1)) & set(key_ids(page2))
    assert 'rel="next"' not in page2 and "First page" in page2
    revoked = (await portal.get("/portal/keys", state="revoked")).text
    assert key_ids(revoked) == [ids[0]]
    found = (await portal.get("/portal/keys", q="SVC-1")).text  # case-insensitive substring of the name
    assert sorted(key_ids(found)) == sorted(ids[i] for i in (11, 13, 15, 17, 19))
    by_subject = (await portal.get("/portal/keys", q="owner-2", state="active")).text
    assert sorted(key_ids(by_subject)) == sorted(ids[i] for i in range(23) if i % 3 == 2)
    by_id = (await portal.get("/portal/keys", q=ids[5][:10])).text
    assert key_ids(by_id) == [ids[5]]
    none = (await portal.get("/portal/keys", q="100%_")).text
    assert key_ids(none) == [] and "No key matches" in none
    bogus = await portal.get("/portal/keys", state="nonsense")  # falls back to all
    assert len(key_ids(bogus.text)) == 20


async def test_audit_page(portal, client):
    key = secret_of((await portal.create(name="audited")).text)
    kid = pyjwt.get_unverified_header(key[len("sk_live_"):])["kid"]
    await portal.post(f"/portal/keys/{kid}/revoke", expect=303)
    r = await portal.get("/portal/audit")
    text = r.text[r.text.index("<tbody>"):]
    assert "key.revoke" in text and "key.mint" in text and "tenant.create" in text
    assert text.index("key.revoke") < text.index("key.mint")  # newest first
    assert ">you</span>" in text and key not in text
    # the key's name next to its id, linking to its events only
    assert f'<span class="name">audited</span><a class="mono sub-link" href="/portal/audit?key={kid}"' in text
    await portal.create(name="other")
    mine = (await portal.get("/portal/audit", key=kid)).text
    rows = re.findall(r'class="action action-[^"]*"[^>]*>([^<]+)<', mine)
    assert rows == ["key.revoke", "key.mint"] and "other" not in mine[mine.index("<tbody>"):]
    revokes = (await portal.get("/portal/audit", action="key.revoke")).text
    assert re.findall(r'class="action action-[^"]*"[^>]*>([^<]+)<', revokes) == ["key.revoke"]
    for bad in ({"key": "a\x00b"}, {"action": "x" * 40}, {"cursor": "MToA"}):
        r = await portal.client.get("/portal/audit", params=bad)
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/html"), bad


async def test_audit_pages_with_an_opaque_cursor(portal):
    for i in range(50):
        await portal.create(name=f"k{i}")  # 50 mints + sign-in + tenant.create: more than one page of 50
    first = (await portal.get("/portal/audit")).text
    m = re.search(r'rel="next" href="/portal/audit\?key=&amp;action=&amp;cursor=([A-Za-z0-9_-]+)"', first)
    assert m, "no Older link"
    second = (await portal.get("/portal/audit", cursor=m.group(1))).text
    count = [len(re.findall(r"<time datetime", t)) for t in (first, second)]
    assert count[0] == 50 and count[1] >= 2 and 'rel="next"' not in second
    assert "tenant.create" in second and "tenant.create" not in first[first.index("<tbody>"):]

