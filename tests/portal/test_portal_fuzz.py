"""Fuzz the portal's forms, query strings and paths (as tests/server/test_fuzz.py
fuzzes the API with schemathesis), on SQLite and PostgreSQL, signed in and not:
whatever a browser or a client sends, never a 5xx and never an error or a
traceback in the log. Bounded: a few hundred requests per backend."""

from __future__ import annotations

import asyncio
import logging
import re
from urllib.parse import quote

import pytest
from _app import create_tenant
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from portal_helpers import csrf_of, nonce_of

_text = st.text(max_size=40)  # any code point but surrogates: NUL and controls included
_long = st.text(min_size=200, max_size=6000, alphabet=st.characters(codec="utf-8"))
_number = st.sampled_from(["inf", "-inf", "nan", "1e308", "1e-400", "-0", "0", "1", "1.5", ".5", "1e3",
                           "9" * 400, "1_0", "0x1f", " 2 ", ""]) | _text | \
    st.integers(min_value=-(2**70), max_value=2**70).map(str) | st.floats().map(str)
_unit = st.sampled_from(["seconds", "minutes", "hours", "days"]) | _text
_FUZZ = hsettings(max_examples=60, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def browser(make_settings):
    """A signed-in test client (sync, for hypothesis), the id of a live key, and
    the errors logged meanwhile."""
    from litestar.testing import TestClient

    from authserver.app import create_app

    s = make_settings(rate_limit_admin_per_minute=0, rate_limit_auth_failures_per_minute=0,
                      default_algorithm="EdDSA")
    _, admin = asyncio.run(create_tenant(s, algorithm="EdDSA"))
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    try:
        with TestClient(app=create_app(s), base_url="http://testserver.local") as client:
            login = client.get("/portal/login")
            r = client.post("/portal/login", data={"csrf_token": csrf_of(login.text), "admin_key": admin},
                            follow_redirects=False)
            assert r.status_code == 303
            csrf = csrf_of(client.get("/portal/keys").text)
            form = client.get("/portal/keys/new")
            r = client.post("/portal/keys", data={"csrf_token": csrf, "form_nonce": nonce_of(form.text),
                                                  "name": "target", "expiry": "never"})
            assert r.status_code == 201
            kid = re.search(r'<tr data-key-id="([^"]+)"', client.get("/portal/keys").text).group(1)
            yield client, csrf, kid, errors
    finally:
        logging.getLogger().removeHandler(errors)


def _ok(r, what) -> None:
    assert r.status_code < 500, (what, r.status_code, r.text[:300])
    assert "Traceback" not in r.text, what


def _logged(errors: _Errors) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in errors.records]


def test_query_strings_never_break_the_portal(browser):
    client, _, _, errors = browser

    @given(q=st.none() | _text | _long, state=st.none() | _text, cursor=st.none() | _text | _long,
           key=st.none() | _text, action=st.none() | _text, audit_cursor=st.none() | _text)
    @_FUZZ
    def fuzz(q, state, cursor, key, action, audit_cursor):
        params = {k: v for k, v in (("q", q), ("state", state), ("cursor", cursor)) if v is not None}
        r = client.get("/portal/keys", params=params)
        _ok(r, params)
        assert r.status_code in (200, 422), (params, r.status_code)
        params = {k: v for k, v in (("key", key), ("action", action), ("cursor", audit_cursor)) if v is not None}
        r = client.get("/portal/audit", params=params)
        _ok(r, params)
        assert r.status_code in (200, 422), (params, r.status_code)

    fuzz()
    assert _logged(errors) == []


def test_key_paths_and_roll_forms_never_break_the_portal(browser):
    client, csrf, kid, errors = browser

    @given(key_id=_text | _long, grace_value=_number, grace_unit=_unit, with_csrf=st.booleans())
    @_FUZZ
    def fuzz(key_id, grace_value, grace_unit, with_csrf):
        base = "/portal/keys/" + quote(key_id, safe="")
        form = {"grace_value": grace_value, "grace_unit": grace_unit, **({"csrf_token": csrf} if with_csrf else {})}
        for method, suffix in (("GET", ""), ("GET", "/roll"), ("POST", "/roll"), ("GET", "/revoke"),
                               ("POST", "/revoke")):
            r = client.request(method, base + suffix, data=form if method == "POST" else None, follow_redirects=False)
            _ok(r, (method, key_id, form))
            if (method, suffix, key_id) == ("GET", "", "new"):  # the mint form
                continue
            assert r.status_code in (403, 404, 405, 422) if key_id.strip() else r.status_code < 500
        # the real key with the fuzzed grace: a roll answers 201 or a 422, and only a 201 rolls
        if with_csrf:
            r = client.post(f"/portal/keys/{kid}/roll", data=form)
            _ok(r, form)
            assert r.status_code in (201, 409, 422), (form, r.status_code)

    fuzz()
    assert _logged(errors) == []


def test_mint_and_sign_in_forms_never_break_the_portal(browser):
    client, csrf, _, errors = browser

    @given(name=_text, subject=_text, scopes=_text, expiry=st.sampled_from(["never", "days"]) | _text,
           expiry_days=_number, admin_key=_text | _long)
    @_FUZZ
    def fuzz(name, subject, scopes, expiry, expiry_days, admin_key):
        nonce = nonce_of(client.get("/portal/keys/new").text)
        form = {"csrf_token": csrf, "form_nonce": nonce, "name": name, "subject": subject, "scopes": scopes,
                "expiry": expiry, "expiry_days": expiry_days}
        r = client.post("/portal/keys", data=form)
        _ok(r, form)
        assert r.status_code in (201, 422), (form, r.status_code)
        # a stranger's sign-in form: the session cookie aside, so it is a fresh visitor
        from litestar.testing import TestClient

        stranger = TestClient(app=client.app, base_url="http://testserver.local")
        page = stranger.get("/portal/login")
        r = stranger.post("/portal/login", data={"csrf_token": csrf_of(page.text), "admin_key": admin_key},
                          follow_redirects=False)
        _ok(r, admin_key)
        assert r.status_code in (401, 429), r.status_code

    fuzz()
    assert _logged(errors) == []


def test_paths_never_break_the_portal(browser):
    client, _, _, errors = browser
    anonymous_paths = st.sampled_from(["/portal/static/", "/portal/", "/portal/keys/", "/portal/audit/"])
    from litestar.testing import TestClient

    stranger = TestClient(app=client.app, base_url="http://testserver.local")  # no session cookie

    @given(prefix=anonymous_paths, tail=_text | _long, signed_in=st.booleans())
    @_FUZZ
    def fuzz(prefix, tail, signed_in):
        path = prefix + quote(tail, safe="/")
        for method in ("GET", "POST"):
            r = (client if signed_in else stranger).request(method, path, follow_redirects=False)
            _ok(r, (method, path))

    fuzz()
    assert _logged(errors) == []
