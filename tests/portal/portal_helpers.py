"""Portal test helpers: sign in and post forms like a browser does."""

from __future__ import annotations

import html
import re

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NONCE = re.compile(r'name="form_nonce" value="([^"]+)"')


def csrf_of(page: str) -> str:
    m = CSRF.search(page)
    assert m, "no CSRF token in the page"
    return html.unescape(m.group(1))


def nonce_of(page: str) -> str:
    m = NONCE.search(page)
    assert m, "no form nonce in the page"
    return html.unescape(m.group(1))


def secret_of(page: str) -> str:
    m = re.search(r'<input id="secret-key"[^>]*?value="([^"]+)"', page, re.S)
    assert m, "no key on the page"
    return html.unescape(m.group(1))


class Portal:
    """A signed-in (or not) browser session over the Litestar test client."""

    def __init__(self, client) -> None:
        self.client = client
        self.csrf: str | None = None
        self.admin_key: str | None = None

    async def login(self, admin_key: str, expect: int = 303):
        r = await self.client.get("/portal/login")
        assert r.status_code == 200, r.text
        r = await self.client.post("/portal/login", data={"csrf_token": csrf_of(r.text), "admin_key": admin_key},
                                   follow_redirects=False)
        assert r.status_code == expect, r.text
        if expect == 303:
            self.admin_key = admin_key
            assert r.headers["location"] == "/portal/keys"
            page = await self.get("/portal/keys")
            self.csrf = csrf_of(page.text)
        return r

    async def get(self, path: str, expect: int = 200, **params):
        r = await self.client.get(path, params=params or None, follow_redirects=False)
        assert r.status_code == expect, (r.status_code, r.text[:2000])
        return r

    async def post(self, path: str, data: dict | None = None, expect: int | None = None, csrf: bool = True):
        body = dict(data or {})
        if csrf:
            body.setdefault("csrf_token", self.csrf)
        r = await self.client.post(path, data=body, follow_redirects=False)
        if expect is not None:
            assert r.status_code == expect, (r.status_code, r.text[:2000])
        return r

    async def create(self, name: str = "first", scopes: str = "read write", expect: int = 201, **extra):
        form = await self.get("/portal/keys/new")
        data = {"name": name, "scopes": scopes, "expiry": "never", "expiry_days": "30",
                "form_nonce": nonce_of(form.text), **extra}
        r = await self.post("/portal/keys", data, expect=expect)
        return r



async def stored_sessions(client) -> bytes:
    """Everything the portal's session store holds (the portal_sessions table),
    read on the test's own connection (the app runs on another loop)."""
    from _db import query_sql

    rows = await query_sql(client.app.state["core"].settings.database_url, "SELECT value FROM portal_sessions")
    return b"".join(bytes(r[0]) for r in rows)
