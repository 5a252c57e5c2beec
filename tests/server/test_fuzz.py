"""Fuzz every operation of /schema/openapi.json with schemathesis against the
ASGI app, on SQLite and PostgreSQL, with and without a valid admin key:
whatever a client sends, never a 5xx, and every 4xx is a problem document.

Schemathesis generates both valid and invalid data, NUL characters included
(PostgreSQL refuses those where SQLite stores them, hence both backends).
Bounded: ~30 examples per operation with a key, ~10 without."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import schemathesis
from _app import create_tenant
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def fuzz_app(make_settings):
    from schemathesis.python import asgi

    import keys.webhooks
    from authserver.app import create_app

    # webhooks on, so that registering is fuzzed for real; the sender polls once, at
    # the start (before any endpoint exists), so no fuzzed URL is ever called
    s = make_settings(rate_limit_admin_per_minute=0, rate_limit_auth_failures_per_minute=0,
                      rate_limit_introspect_per_minute=0, default_algorithm="EdDSA",
                      webhook_key=keys.webhooks.new_box_key(), webhook_poll_seconds=3600)
    _, admin = asyncio.run(create_tenant(s, algorithm="EdDSA"))
    app = create_app(s)
    errors = _Errors()
    logging.getLogger("authserver").addHandler(errors)
    try:
        yield app, admin, errors
    finally:
        logging.getLogger("authserver").removeHandler(errors)
        asgi.shutdown_lifespans()  # stops the app (its engine) before the database goes


def test_no_server_errors(fuzz_app):
    app, admin, errors = fuzz_app
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    statuses: dict[int, int] = {}
    bad: list[str] = []
    started = time.monotonic()
    for authenticated, examples in ((True, 30), (False, 10)):
        headers = {"Authorization": f"Bearer {admin}"} if authenticated else {}
        for operation in operations:

            @given(case=operation.as_strategy())
            @hsettings(max_examples=examples, deadline=None, database=None, derandomize=True,
                       suppress_health_check=list(HealthCheck))
            def fuzz(case):
                r = case.call(headers=headers)  # noqa: B023 - fuzz() runs within this iteration
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                where = f"{case.method} {case.formatted_path} -> {r.status_code}"
                if r.status_code >= 500:
                    bad.append(f"{where}: {r.text[:300]}")
                elif r.status_code >= 400:
                    ctype = r.headers.get("content-type") or ""
                    ctype = ctype[0] if isinstance(ctype, list) else ctype
                    if r.status_code != 405 or r.content:
                        if not ctype.startswith("application/problem+json"):
                            bad.append(f"{where}: not a problem document ({ctype})")
                if not authenticated and case.path.startswith(("/v1/", "/oauth/")):  # noqa: B023 - as above
                    if r.status_code < 400:
                        bad.append(f"{where}: anonymous call not refused")

            fuzz()
    elapsed = time.monotonic() - started
    print(f"\nfuzzed {len(operations)} operations, {sum(statuses.values())} requests in {elapsed:.1f}s: {statuses}")
    assert bad == [], "\n".join(bad[:20])
    assert [r.getMessage() for r in errors.records] == []  # no unhandled error was logged
    assert sum(statuses.values()) >= 4 * len(operations)
    assert any(400 <= s < 500 for s in statuses) and any(s < 300 for s in statuses)


# --- targeted property-based fuzzing of the fields that reach the database ---

from hypothesis import strategies as st  # noqa: E402

_ALGS = ["RS256", "ES256", "EdDSA", "PS256"]
_text = st.text(max_size=40)  # any code point but surrogates, NUL and controls included
_json_leaf = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | \
    st.floats(allow_nan=False, allow_infinity=False) | _text
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                     max_leaves=8)
_maybe_int = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([0, 1, 60, 3600])
_mint_body = st.fixed_dictionaries({}, optional={
    "name": _text, "subject": _text, "scopes": st.lists(_text, max_size=4),
    "expires_in": _maybe_int, "algorithm": st.sampled_from(["EdDSA", "ES256"]) | _text,
    "metadata": st.dictionaries(_text, _json, max_size=4),
    "rate_limits": st.lists(st.fixed_dictionaries({"limit": _maybe_int, "window_seconds": _maybe_int}), max_size=2),
})


@pytest.fixture
def sync_client(fuzz_app):
    from litestar.testing import TestClient

    app, admin, errors = fuzz_app
    with TestClient(app=app, base_url="http://testserver.local") as client:
        client.headers["Authorization"] = f"Bearer {admin}"
        yield client, errors


def _no_5xx(r, what):
    assert r.status_code < 500, (what, r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/problem+json"), (what, r.text[:200])


def _same_json(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or abs(a - b) <= 1e-15 * max(abs(a), abs(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_mint_fields_never_break_the_database(sync_client):
    client, errors = sync_client
    kept = []

    @given(body=_mint_body)
    @hsettings(max_examples=80, deadline=None, database=None, derandomize=True,
               suppress_health_check=list(HealthCheck))
    def fuzz(body):
        r = client.post("/v1/keys", json=body)
        _no_5xx(r, body)
        if r.status_code == 201:
            minted = r.json()
            if minted["expires_at"] is None or minted["expires_at"] > time.time() + 600:
                kept.append(minted["id"])  # (this app runs on the real clock: short-lived keys leave)
            got = client.get(f"/v1/keys/{minted['id']}")
            assert got.status_code == 200
            for field in ("name", "subject", "scopes", "metadata"):
                if field in body:
                    # stored as given, read back the same (PostgreSQL's JSONB keeps numbers as decimals:
                    # the float 1.18e+17 comes back as the integer 118081730668845070, hence numerically)
                    assert _same_json(got.json()[field], body[field]), field

    fuzz()
    assert kept, "no valid body was generated at all"
    published = {k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]}
    assert set(kept) <= published
    assert [r.getMessage() for r in errors.records] == []


def test_queries_paths_and_tokens_never_break_the_database(sync_client):
    client, errors = sync_client
    kid = client.post("/v1/keys", json={"algorithm": "EdDSA"}).json()["id"]

    @given(subject=st.none() | _text, q=st.none() | _text, cursor=st.none() | _text, state=st.none() | _text,
           limit=st.none() | _maybe_int, key_id=_text, before_id=st.none() | _maybe_int, kid_claim=_text)
    @hsettings(max_examples=80, deadline=None, database=None, derandomize=True,
               suppress_health_check=list(HealthCheck))
    def fuzz(subject, q, cursor, state, limit, key_id, before_id, kid_claim):
        params = {k: str(v) for k, v in (("subject", subject), ("q", q), ("cursor", cursor), ("state", state),
                                         ("limit", limit)) if v is not None}
        _no_5xx(client.get("/v1/keys", params=params), params)
        from urllib.parse import quote

        path = "/v1/keys/" + quote(key_id, safe="")
        for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/roll")):
            r = client.request(method, path + suffix)
            # an empty id is the list route; anything else is one key
            assert r.status_code in (200, 405) if not key_id else r.status_code in (400, 404, 405), (key_id, r.text)
            _no_5xx(r, (method, key_id))
        if before_id is not None:
            _no_5xx(client.get("/v1/audit", params={"before_id": str(before_id)}), before_id)
        import base64
        import json as _json_mod

        header = base64.urlsafe_b64encode(_json_mod.dumps({"alg": "EdDSA", "kid": kid_claim}).encode()).decode()
        token = "sk_live_" + header.rstrip("=") + ".eyJ9.AAAA"
        for body in ({"data": {"token": token}}, {"json": {"token": token}}, {"data": {"token": kid_claim or "x"}}):
            r = client.post("/oauth/introspect", **body)
            _no_5xx(r, body)
            assert r.status_code != 200 or r.json()["active"] is False

    fuzz()
    assert client.get(f"/v1/keys/{kid}").json()["state"] == "active"  # nothing above touched it
    assert [r.getMessage() for r in errors.records] == []
