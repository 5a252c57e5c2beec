"""Portal sessions live in the database: a session opened on one replica is
served by another (two apps on one database, as two replicas or two
`serve --workers` processes), sign-out on one ends it on both, and the
sign-in form's token crosses replicas when they share AUTHSERVER_PORTAL_SECRET."""

from __future__ import annotations

import hashlib

from _db import query_sql
from portal_helpers import Portal, csrf_of

from authserver.portal.session import cookie_name, login_cookie_name

SECRET = "portal-secret-shared-by-replicas"


async def test_a_session_opened_on_one_replica_is_served_by_another(tenant, client_factory, make_settings):
    a = await client_factory(portal_secret=SECRET)
    b = await client_factory(portal_secret=SECRET)
    portal = Portal(a)
    await portal.login(tenant[1])
    session_id = a.cookies[cookie_name(False)]
    b.cookies.set(cookie_name(False), session_id)
    page = await b.get("/portal/keys", follow_redirects=False)
    assert page.status_code == 200 and "Sign out" in page.text
    # the table holds a hash of the cookie's session id, never the id itself
    rows = await query_sql(make_settings().database_url, "SELECT key, value FROM portal_sessions")
    assert [r[0] for r in rows] == [hashlib.sha256(session_id.encode()).hexdigest()]
    assert session_id.encode() not in b"".join(bytes(r[1]) for r in rows)
    assert tenant[1].encode() not in b"".join(bytes(r[1]) for r in rows)
    # signing out on B ends the session on A too
    r = await b.post("/portal/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    again = await a.get("/portal/keys", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith("/portal/login")


async def test_the_sign_in_form_crosses_replicas_only_with_a_shared_secret(tenant, client_factory):
    a = await client_factory(portal_secret=SECRET)
    b = await client_factory(portal_secret=SECRET)
    lone = await client_factory()  # its own per-process secret
    form = await a.get("/portal/login")
    token, cookie = csrf_of(form.text), a.cookies[login_cookie_name(False)]
    for client, expect in ((lone, 403), (b, 303)):
        client.cookies.set(login_cookie_name(False), cookie)
        r = await client.post("/portal/login", data={"csrf_token": token, "admin_key": tenant[1]},
                              follow_redirects=False)
        assert r.status_code == expect, r.text[:500]
