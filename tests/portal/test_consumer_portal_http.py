"""The consumer portal over HTTP (issue 15): sign-in links from POST /v1/portal/sessions,
a customer's own keys within the producer's policy, never anyone else's, never admin pages.
On SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest
from portal_helpers import csrf_of, nonce_of, secret_of
from sqlalchemy import select

BASE = "http://testserver.local"


async def make_link(client, headers, subject: str = "acme", expect: int = 201, **body) -> dict:
    r = await client.post("/v1/portal/sessions", json={"subject": subject, **body}, headers=headers)
    assert r.status_code == expect, r.text
    return r.json()


def key_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-key-id="([^"]+)"', page)


class Customer:
    """One browser: the test client's cookie jar (cleared on sign-in, so one persona at a time)."""

    def __init__(self, client) -> None:
        self.client = client
        self.csrf: str | None = None

    async def sign_in(self, url: str, expect: int = 200):
        assert url.startswith(f"{BASE}/portal/sign-in/")
        self.client.cookies.clear()
        r = await self.client.get(url.removeprefix(BASE), follow_redirects=False)
        assert r.status_code == expect, r.text[:1000]
        if expect == 200:
            assert '<meta http-equiv="refresh" content="0;url=/portal/my/keys">' in r.text
            assert "no-store" in r.headers["cache-control"]
            page = await self.client.get("/portal/my/keys")
            assert page.status_code == 200, page.text[:1000]
            self.csrf = csrf_of(page.text)
        return r

    async def get(self, path: str, expect: int = 200):
        r = await self.client.get(path, follow_redirects=False)
        assert r.status_code == expect, (r.status_code, r.text[:1500])
        return r

    async def post(self, path: str, data: dict | None = None, expect: int | None = None):
        body = {"csrf_token": self.csrf, **(data or {})}
        r = await self.client.post(path, data=body, follow_redirects=False)
        if expect is not None:
            assert r.status_code == expect, (r.status_code, r.text[:1500])
        return r

    async def create(self, name: str = "k", scopes: list[str] | None = None, expiry: str = "days", days: str = "30",
                     expect: int = 201, **extra):
        form = await self.get("/portal/my/keys/new")
        data = {"name": name, "scopes": scopes or [], "expiry": expiry, "expiry_days": days,
                "form_nonce": nonce_of(form.text), **extra}
        return await self.post("/portal/my/keys", data, expect=expect)


async def api_key(client, headers, subject: str, **body) -> dict:
    r = await client.post("/v1/keys", json={"name": f"key of {subject}", "subject": subject, **body}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


async def state_of(client, headers, kid: str) -> str:
    r = await client.get(f"/v1/keys/{kid}", headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["state"])


# --- the link -----------------------------------------------------------------------

async def test_link_needs_a_writing_admin_key_and_good_input(client, admin_headers, clock, make_settings):
    assert (await client.post("/v1/portal/sessions", json={"subject": "acme"})).status_code == 401
    reader = await client.post("/v1/admin-keys", json={"name": "ro", "scopes": ["keys:read"]}, headers=admin_headers)
    ro = {"Authorization": f"Bearer {reader.json()['key']}"}
    assert (await client.post("/v1/portal/sessions", json={"subject": "acme"}, headers=ro)).status_code == 403

    for body in ({"subject": ""}, {"subject": "a\x00b"}, {"subject": "acme", "ttl": 0},
                 {"subject": "acme", "ttl": 3601}, {"subject": "acme", "ttl": "600"},
                 {"subject": "acme", "surprise": 1}, {"subject": "acme", "policy": {"max_keys": 0}},
                 {"subject": "acme", "policy": {"allowed_scopes": ["a b"]}}):
        await make_link(client, admin_headers, expect=400, **body)
    for url in ("http://example.com/back", "javascript:alert(1)", "https://user:pw@example.com/",
                "ftp://example.com/", "https:///nohost", "//example.com/x", "https://example.com:99999/"):
        r = await client.post("/v1/portal/sessions", json={"subject": "acme", "return_url": url},
                              headers=admin_headers)
        assert r.status_code == 422, (url, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")

    for url in ("https://app.example.com/account", "http://127.0.0.1:3000/back", "http://localhost/x"):
        link = await make_link(client, admin_headers, return_url=url)  # http loopback: the server is http here
        assert link["expires_at"] == int(clock()) + 600
    r = await client.post("/v1/portal/sessions", json={"subject": "acme", "ttl": 60}, headers=admin_headers)
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    assert r.json()["expires_at"] == int(clock()) + 60
    token = r.json()["url"].rsplit("/", 1)[1]
    assert len(token) == 43

    # only a hash is stored: the table never holds the token
    from authserver.db.models import PortalSignIn
    from authserver.offline import open_core
    from authserver.services.consumers import token_hash

    async with open_core(make_settings()) as core, core.sessions() as s:  # its own engine: this event loop
        rows = (await s.scalars(select(PortalSignIn))).all()
    assert token_hash(token) in {row.token_hash for row in rows}
    assert all(token not in repr(vars(row)) for row in rows)
    audit = (await client.get("/v1/audit", params={"action": "portal.link"}, headers=admin_headers)).json()["data"]
    assert audit and audit[0]["details"]["subject"] == "acme" and token not in str(audit)


async def test_https_server_refuses_http_loopback_return_url(tenant, client_factory):
    client = await client_factory(public_url="https://keys.example.com")
    headers = {"Authorization": f"Bearer {tenant[1]}"}
    r = await client.post("/v1/portal/sessions", json={"subject": "acme", "return_url": "http://127.0.0.1/x"},
                          headers=headers)
    assert r.status_code == 422
    link = await make_link(client, headers, return_url="https://app.example.com/")
    assert link["url"].startswith("https://keys.example.com/portal/sign-in/")


async def test_a_link_works_once_and_not_after_it_expires(client, admin_headers, clock):
    me = Customer(client)
    link = await make_link(client, admin_headers, return_url="https://app.example.com/account")
    r = await me.sign_in(link["url"])
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("authserver_portal="))
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    page = await me.get("/portal/my/keys")
    assert "Signed in as <strong id=\"consumer-subject\">acme</strong>" in page.text
    assert 'href="https://app.example.com/account"' in page.text  # the way back

    # replayed: refused, and no session comes with the refusal
    replay = await me.sign_in(link["url"], expect=401)
    assert "cannot be used" in replay.text
    assert not any(c.startswith("authserver_portal=") and "Max-Age=0" not in c
                   for c in replay.headers.get_list("set-cookie"))
    assert (await client.get("/portal/my/keys", follow_redirects=False)).status_code == 401

    # expired: refused with the same answer
    late = await make_link(client, admin_headers, ttl=120)
    clock.advance(121)
    assert "cannot be used" in (await me.sign_in(late["url"], expect=401)).text
    # not one of ours, malformed, or a prefix of a real one: the same answer again
    fresh = await make_link(client, admin_headers)
    for bad in ("x" * 43, "short", fresh["url"].rsplit("/", 1)[1][:-1], "%00" * 10):
        assert (await client.get(f"/portal/sign-in/{bad}")).status_code == 401
    await me.sign_in(fresh["url"])  # still good: failed guesses did not burn it


async def test_a_new_sign_in_replaces_the_old_session(client, admin_headers):
    me = Customer(client)
    await me.sign_in((await make_link(client, admin_headers, subject="acme"))["url"])
    old = client.cookies.get("authserver_portal")
    other = await make_link(client, admin_headers, subject="globex")
    r = await client.get(other["url"].removeprefix(BASE))
    assert r.status_code == 200 and client.cookies.get("authserver_portal") != old
    client.cookies.set("authserver_portal", old)
    # the old session id was dropped when the new one began (fixation-safe)
    assert (await client.get("/portal/my/keys", follow_redirects=False)).status_code == 401


# --- only the consumer's own keys ----------------------------------------------------

async def test_other_subjects_keys_are_not_found_anywhere(client, admin_headers):
    mine = await api_key(client, admin_headers, "acme")
    theirs = await api_key(client, admin_headers, "globex")
    admin_kid = (await client.get("/v1/admin-keys", headers=admin_headers)).json()["data"][0]["id"]
    me = Customer(client)
    await me.sign_in((await make_link(client, admin_headers, subject="acme",
                                      policy={"allowed_scopes": ["read"]}))["url"])
    page = await me.get("/portal/my/keys")
    assert key_ids(page.text) == [mine["id"]]
    assert theirs["id"] not in page.text
    for kid in (theirs["id"], admin_kid, "nope", "x" * 65):
        await me.get(f"/portal/my/keys/{kid}", expect=404)  # its page (and usage) too
        for action in ("roll", "revoke"):
            await me.get(f"/portal/my/keys/{kid}/{action}", expect=404)
            r = await me.post(f"/portal/my/keys/{kid}/{action}", {"grace_value": "0", "grace_unit": "seconds"})
            assert r.status_code == 404, (kid, action, r.status_code)
            assert "is an admin key" not in r.text
    await me.get(f"/portal/my/keys?cursor={theirs['id']}", expect=422)
    assert await state_of(client, admin_headers, theirs["id"]) == "active"
    # a subject field in the create form is ignored: the key is the consumer's
    r = await me.create("sneaky", subject="globex", scopes=["read"])
    assert "<dd>acme</dd>" in r.text
    acme = (await client.get("/v1/keys", params={"subject": "acme"}, headers=admin_headers)).json()["data"]
    globex = (await client.get("/v1/keys", params={"subject": "globex"}, headers=admin_headers)).json()["data"]
    assert len(acme) == 2 and [k["id"] for k in globex] == [theirs["id"]]


async def test_admin_pages_and_the_api_refuse_a_consumer_session(client, admin_headers):
    theirs = await api_key(client, admin_headers, "globex")
    me = Customer(client)
    await me.sign_in((await make_link(client, admin_headers))["url"])
    for path in ("/portal/keys", "/portal/keys/new", "/portal/audit", "/portal/admin-keys",
                 f"/portal/keys/{theirs['id']}/revoke"):
        r = await client.get(path, follow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
    for path, data in (("/portal/keys", {"name": "x"}), (f"/portal/keys/{theirs['id']}/revoke", {}),
                       ("/portal/admin-keys", {"name": "x", "scopes": "keys:write"})):
        r = await me.post(path, data)
        assert r.status_code == 403, (path, r.status_code)
    assert (await client.get("/v1/keys")).status_code == 401  # the cookie is no API credential
    assert await state_of(client, admin_headers, theirs["id"]) == "active"
    # and an admin's session does not open the consumer pages
    client.cookies.clear()
    r = await client.get("/portal/login")
    await client.post("/portal/login", data={"csrf_token": csrf_of(r.text),
                                             "admin_key": admin_headers["Authorization"][7:]})
    assert (await client.get("/portal/keys")).status_code == 200
    assert (await client.get("/portal/my/keys", follow_redirects=False)).status_code == 403


# --- create, roll, revoke within the policy --------------------------------------------

async def test_policy_limits_are_enforced_as_form_errors(client, admin_headers, clock):
    policy = {"max_keys": 2, "allowed_scopes": ["read", "write"], "max_lifetime": 30 * 86400}
    me = Customer(client)
    await me.sign_in((await make_link(client, admin_headers, policy=policy))["url"])
    form = await me.get("/portal/my/keys/new")
    assert 'value="read"' in form.text and 'value="write"' in form.text and 'id="expiry-never"' not in form.text

    r = await me.create(scopes=["admin"], expect=422)
    assert 'id="form-error"' in r.text and "scope admin is not allowed" in r.text
    r = await me.create(expiry="never", expect=422)
    assert "must expire within 30 days" in r.text
    await me.create(days="31", expect=422)
    r = await me.create("first", scopes=["read"], days="30")
    first = secret_of(r.text)
    await me.create("second", scopes=["read", "write"], days="7")
    r = await me.create("third", expect=409)
    assert "most allowed is 2" in r.text
    keys = (await client.get("/v1/keys", params={"subject": "acme"}, headers=admin_headers)).json()["data"]
    assert len(keys) == 2 and all(k["expires_at"] - k["created_at"] <= 30 * 86400 for k in keys)
    assert {tuple(k["scopes"]) for k in keys} == {("read",), ("read", "write")}
    page = await me.get("/portal/my/keys")
    assert "Create a key" not in page.text  # at the limit

    # roll with grace: the old key keeps working, and a rolling key does not count
    old = next(k for k in keys if k["name"] == "first")
    await me.get(f"/portal/my/keys/{old['id']}/roll")
    r = await me.post(f"/portal/my/keys/{old['id']}/roll", {"grace_value": "1", "grace_unit": "hours"}, expect=201)
    new_key = secret_of(r.text)
    assert new_key != first and "keeps working until" in r.text
    assert await state_of(client, admin_headers, old["id"]) == "rolling"
    await me.create("third again", expect=409)  # still 2 active
    # revoke one: room for another
    second = next(k for k in keys if k["name"] == "second")
    r = await me.post(f"/portal/my/keys/{second['id']}/revoke", expect=303)
    assert r.headers["location"] == "/portal/my/keys"
    assert "is revoked" in (await me.get("/portal/my/keys")).text
    assert await state_of(client, admin_headers, second["id"]) == "revoked"
    await me.create("third", days="1")

    # the audit log names the consumer
    events = (await client.get("/v1/audit", headers=admin_headers)).json()["data"]
    by_consumer = {e["action"] for e in events if e["actor"] == "portal:acme"}
    assert by_consumer == {"portal.sign_in", "key.mint", "key.roll", "key.revoke"}


async def test_rolling_a_longer_lived_key_brings_it_within_the_policy(client, admin_headers):
    producers = await api_key(client, admin_headers, "acme")  # never expires
    me = Customer(client)
    await me.sign_in((await make_link(client, admin_headers, policy={"max_lifetime": 86400}))["url"])
    await me.post(f"/portal/my/keys/{producers['id']}/roll", {"grace_value": "0", "grace_unit": "seconds"},
                  expect=201)
    live = (await client.get("/v1/keys", params={"subject": "acme", "state": "active"},
                             headers=admin_headers)).json()["data"]
    assert len(live) == 1 and live[0]["expires_at"] - live[0]["created_at"] == 86400


async def test_usage_and_last_used_are_shown(client, admin_headers, clock, make_settings):
    from authserver.offline import open_core

    mine = await api_key(client, admin_headers, "acme")
    async with open_core(make_settings()) as core:  # what a gateway's access log reports, written as usage does
        for status in (200, 200, 204, 401, 503):
            core.usage.record("default", mine["id"], status, clock() - 60)
        await core.usage.flush()
    me = Customer(client)
    await me.sign_in((await make_link(client, admin_headers))["url"])
    page = (await me.get("/portal/my/keys")).text
    assert "3 ok · 1 refused · 1 failed" in page
    assert 'class="last-used"><time' in page
    assert f'href="/portal/my/keys/{mine["id"]}"' in page  # the name leads to the key's page
    # the key's page: the 14-day chart (inline SVG) and the same numbers as text
    detail = (await me.get(f"/portal/my/keys/{mine['id']}")).text
    assert "5 requests through the gateways: 3 2xx, 1 4xx, 1 5xx." in " ".join(detail.split())
    assert '<svg class="usage-chart"' in detail and detail.count('<rect class="bar s') == 3
    assert 'href="/portal/keys' not in detail.replace('href="/portal/my/', "")  # no admin links


async def test_revoking_the_admin_key_that_made_the_link_ends_the_session(client, admin_headers):
    extra = await client.post("/v1/admin-keys", json={"name": "backend", "scopes": ["keys:read", "keys:write"]},
                              headers=admin_headers)
    backend = {"Authorization": f"Bearer {extra.json()['key']}"}
    me = Customer(client)
    await me.sign_in((await make_link(client, backend))["url"])
    await me.get("/portal/my/keys")
    r = await client.delete(f"/v1/admin-keys/{extra.json()['id']}", headers=admin_headers)
    assert r.status_code == 200
    r = await me.get("/portal/my/keys", expect=401)
    assert "session ended" in r.text


async def test_sign_out_goes_back_and_ends_the_session(client, admin_headers):
    me = Customer(client)
    await me.sign_in((await make_link(client, admin_headers, return_url="https://app.example.com/done"))["url"])
    r = await me.post("/portal/my/logout", expect=303)
    assert r.headers["location"] == "https://app.example.com/done"
    assert (await client.get("/portal/my/keys", follow_redirects=False)).status_code == 401
    await me.sign_in((await make_link(client, admin_headers))["url"])  # no way back given: a page says so
    r = await me.post("/portal/my/logout", expect=200)
    assert "You are signed out" in r.text and "refresh" not in r.text
    assert (await client.get("/portal/my/keys", follow_redirects=False)).status_code == 401


@pytest.mark.parametrize("field", ["grace_value", "csrf_token"])
async def test_bad_forms_change_nothing(client, admin_headers, field):
    mine = await api_key(client, admin_headers, "acme")
    me = Customer(client)
    await me.sign_in((await make_link(client, admin_headers))["url"])
    data = {"grace_value": "1", "grace_unit": "hours", field: "nan"}
    r = await me.post(f"/portal/my/keys/{mine['id']}/roll", data)
    assert r.status_code in (403, 422)
    assert await state_of(client, admin_headers, mine["id"]) == "active"


async def test_cli_prints_a_link_that_signs_in(client, make_settings, admin_headers):
    import asyncio
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "AUTHSERVER_DATABASE_URL": make_settings().database_url,
           "AUTHSERVER_PUBLIC_URL": BASE, "AUTHSERVER_LOG_JSON": "false", "AUTHSERVER_REDIS_URL": ""}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "authserver", "portal", "session", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    p = await asyncio.to_thread(cli, "--subject", "acme", "--scope", "read", "--max-lifetime", "7d",
                                "--return-url", "https://app.example.com/", "--json")
    assert p.returncode == 0, p.stderr
    link = json.loads(p.stdout)
    me = Customer(client)
    await me.sign_in(link["url"])
    assert "At most 7 days" in (await me.get("/portal/my/keys/new")).text
    events = (await client.get("/v1/audit", params={"action": "portal.link"}, headers=admin_headers)).json()["data"]
    assert events[0]["actor"] == "cli"
    for bad in (("--subject", "acme", "--ttl", "2h"), ("--subject", "acme", "--return-url", "http://example.com/"),
                ("--subject", "acme", "--max-keys", "0")):
        p = await asyncio.to_thread(cli, *bad)
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
        assert p.stderr.strip(), bad


async def test_a_link_redeemed_in_parallel_signs_in_once(client, admin_headers):
    import asyncio

    link = await make_link(client, admin_headers)
    path = link["url"].removeprefix(BASE)
    answers = await asyncio.gather(*(client.get(path) for _ in range(6)))
    assert sorted(r.status_code for r in answers) == [200] + [401] * 5


async def test_parallel_creates_stop_at_max_keys(tenant, make_settings):
    """The per-subject limit is checked under the tenant's lock, in the mint's transaction."""
    import asyncio

    from authserver.errors import QuotaExceeded
    from authserver.offline import open_core
    from authserver.schemas import ConsumerPolicy
    from authserver.services.consumers import Consumer

    me = Consumer("default", "acme", ConsumerPolicy(max_keys=2))
    async with open_core(make_settings()) as core:
        results = await asyncio.gather(*(core.consumers.mint(me, f"k{i}", [], None) for i in range(5)),
                                       return_exceptions=True)
        assert sum(1 for r in results if isinstance(r, tuple)) == 2
        assert all(isinstance(r, QuotaExceeded) for r in results if not isinstance(r, tuple))
        assert await core.consumers.active_count(me) == 2


async def test_a_failing_sign_in_logs_no_token(client, admin_headers, make_settings, caplog):
    from sqlalchemy import text

    from authserver.offline import open_core

    link = await make_link(client, admin_headers)
    token = link["url"].rsplit("/", 1)[1]
    async with open_core(make_settings()) as core, core.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE portal_sign_ins RENAME TO portal_sign_ins_away"))
    try:
        r = await client.get(link["url"].removeprefix(BASE))
        assert r.status_code in (500, 503) and token not in r.text
        assert "/portal/sign-in/{token}" in caplog.text  # it was logged, by its route
        assert token not in caplog.text
    finally:
        async with open_core(make_settings()) as core, core.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE portal_sign_ins_away RENAME TO portal_sign_ins"))


async def test_answers_match_the_openapi_document(client, admin_headers):
    import jsonschema_rs

    doc = (await client.get("/schema/openapi.json")).json()
    op = doc["paths"]["/v1/portal/sessions"]["post"]
    assert op["security"] == [{"adminKey": []}] and op["summary"]

    def conforms(r) -> None:
        ((media_type, content),) = op["responses"][str(r.status_code)]["content"].items()
        assert r.headers["content-type"].split(";")[0] == media_type
        jsonschema_rs.Draft202012Validator({**content["schema"], "components": doc["components"]}).validate(r.json())

    for body, headers, status in (({"subject": "acme"}, admin_headers, 201), ({"subject": "acme"}, {}, 401),
                                  ({"subject": 1}, admin_headers, 400),
                                  ({"subject": "acme", "return_url": "http://example.com"}, admin_headers, 422)):
        r = await client.post("/v1/portal/sessions", json=body, headers=headers)
        assert r.status_code == status, r.text
        conforms(r)


async def test_subject_and_return_url_are_escaped(client, admin_headers):
    me = Customer(client)
    await me.sign_in((await make_link(client, admin_headers, subject='<img src=x onerror="alert(1)">',
                                      return_url='https://app.example.com/?q="><script>alert(1)</script>'))["url"])
    page = (await me.get("/portal/my/keys")).text
    assert "<img src=x" not in page and "<script>alert" not in page
    assert "&lt;img src=x" in page and "&#34;&gt;&lt;script&gt;" in page
