"""Whatever a client sends: a 4xx RFC 9457 problem, never a 500, nothing
half-written (issue #3), on SQLite and PostgreSQL (which refuses NUL
characters and integers beyond 64 bits that SQLite stores happily)."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pytest
from _env import METRICS_HEADERS
from _server_helpers import all_key_ids, is_problem, mint

JSON = {"Content-Type": "application/json"}

BAD_MINT_BODIES = {
    "truncated": b"{",
    "array": b"[]",
    "string": b'"x"',
    "null": b"null",
    "number": b"5",
    "empty": b"",
    "not json": b"name=x",
    "name int": b'{"name": 5}',
    "name empty": b'{"name": ""}',
    "name too long": json.dumps({"name": "n" * 201}).encode(),
    "name NUL": b'{"name": "a\\u0000b"}',
    "name newline": b'{"name": "a\\nb"}',
    "subject empty": b'{"subject": ""}',
    "subject NUL": b'{"subject": "\\u0000"}',
    "subject CRLF": b'{"subject": "a\\r\\nx-injected: 1"}',
    "subject too long": json.dumps({"subject": "s" * 257}).encode(),
    "unknown field": b'{"unknown": 1}',
    "key field": b'{"key": "sk_live_x"}',
    "id field": b'{"id": "abc"}',
    "scopes string": b'{"scopes": "read"}',
    "scope with space": b'{"scopes": ["a b"]}',
    "scope with quote": b'{"scopes": ["a\\"b"]}',
    "scope with backslash": b'{"scopes": ["a\\\\b"]}',
    "scope empty": b'{"scopes": [""]}',
    "scope NUL": b'{"scopes": ["a\\u0000"]}',
    "scope non-ascii": '{"scopes": ["lecture"]}'.replace("lecture", "l\u00e9cture").encode(),
    "scope too long": json.dumps({"scopes": ["s" * 129]}).encode(),
    "too many scopes": json.dumps({"scopes": [f"s{i}" for i in range(65)]}).encode(),
    "scope int": b'{"scopes": [1]}',
    "expires_in zero": b'{"expires_in": 0}',
    "expires_in negative": b'{"expires_in": -5}',
    "expires_in huge": b'{"expires_in": 1e99}',
    "expires_in 2^64": json.dumps({"expires_in": 2**64}).encode(),
    "expires_in over 10 years": json.dumps({"expires_in": 10 * 365 * 86400 + 1}).encode(),
    "expires_in string": b'{"expires_in": "60"}',
    "expires_in float": b'{"expires_in": 60.5}',
    "expires_in bool": b'{"expires_in": true}',
    "algorithm HS256": b'{"algorithm": "HS256"}',
    "algorithm none": b'{"algorithm": "none"}',
    "algorithm lowercase": b'{"algorithm": "rs256"}',
    "algorithm int": b'{"algorithm": 256}',
    "metadata > 4 KB": json.dumps({"metadata": {"x": "a" * 5000}}).encode(),
    "metadata many keys > 4 KB": json.dumps({"metadata": {f"k{i}": "v" * 40 for i in range(120)}}).encode(),
    "metadata list": b'{"metadata": [1, 2]}',
    "metadata NUL value": b'{"metadata": {"a": "\\u0000"}}',
    "metadata NUL key": b'{"metadata": {"\\u0000": 1}}',
    "metadata nested NUL": b'{"metadata": {"a": [{"b": "x\\u0000"}]}}',
    "metadata deep (40)": b'{"metadata": {"a": ' + b"[" * 40 + b"]" * 40 + b"}}",
    "metadata absurdly deep": b'{"metadata": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
    "metadata infinity": b'{"metadata": {"a": 1e400}}',
    "metadata NaN": b'{"metadata": {"a": NaN}}',
    "lone surrogate": b'{"name": "\\ud800"}',
    "invalid utf-8": b'{"name": "\xff\xfe"}',
    "invalid utf-8 in a key": b'{"metadata": {"\xc3\x28": 1}}',
    "rate_limits zero": b'{"rate_limits": [{"limit": 0, "window_seconds": 1}]}',
    "rate_limits window too long": b'{"rate_limits": [{"limit": 1, "window_seconds": 2678401}]}',
    "rate_limits extra field": b'{"rate_limits": [{"limit": 1, "window_seconds": 1, "x": 1}]}',
    "rate_limits missing field": b'{"rate_limits": [{"limit": 1}]}',
    "rate_limits too many": json.dumps({"rate_limits": [{"limit": 1, "window_seconds": 1}] * 9}).encode(),
    "rate_limits object": b'{"rate_limits": {"limit": 1, "window_seconds": 1}}',
    "duplicate keys, bad last": b'{"expires_in": 60, "expires_in": 0}',
}


def _check_4xx(failures: list, label: str, r) -> None:
    """Collect instead of stopping at the first case: the report lists them all."""
    try:
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
        is_problem(r)
    except AssertionError as exc:
        failures.append((label, str(exc)[:300]))


async def test_bad_mint_bodies_are_4xx_problems(client, admin_headers):
    failures: list = []
    for label, raw in BAD_MINT_BODIES.items():
        r = await client.post("/v1/keys", content=raw, headers={**admin_headers, **JSON})
        _check_4xx(failures, label, r)
    assert failures == []
    assert await all_key_ids(client, admin_headers) == []  # nothing half-written
    # a refused algorithm never becomes a metrics label (unbounded series)
    metrics = (await client.get("/metrics", headers=METRICS_HEADERS)).text
    assert "HS256" not in metrics and "rs256" not in metrics and 'alg="none"' not in metrics


async def test_the_good_neighbours_of_those_bodies_are_accepted(client, admin_headers):
    """So the cases above fail for the reason they name, not for another."""
    good = [
        {"name": "n" * 200, "subject": "s" * 256, "scopes": [f"s{i}" for i in range(64)]},
        {"scopes": ["s" * 128, "a:b", "x/y", "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"]},
        {"expires_in": 1}, {"expires_in": 10 * 365 * 86400},
        {"metadata": {"x": "a" * 3000, "n": [1, 2.5, None, True, {"deep": [[[[{"ok": "é ✓"}]]]]}]}},
        {"metadata": {"a": 123456789012345678901234567890}},
        {"rate_limits": [{"limit": 10**9, "window_seconds": 2678400}] * 8},
        {"name": "Ünïcødé ✓ key", "subject": "team/α"},
        {"algorithm": "PS256"},
    ]
    for body in good:
        r = await client.post("/v1/keys", json=body, headers=admin_headers)
        assert r.status_code == 201, (body, r.text[:300])
        got = (await client.get(f"/v1/keys/{r.json()['id']}", headers=admin_headers)).json()
        for field in ("name", "subject", "scopes", "metadata", "rate_limits"):
            if field in body:
                assert got[field] == body[field], field


async def test_mint_wants_json(client, admin_headers):
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                         "application/xml", "json", "application/jsonp"):
        headers = dict(admin_headers)
        if content_type:
            headers["Content-Type"] = content_type
        r = await client.post("/v1/keys", content=b'{"name": "x"}', headers=headers)
        is_problem(r, 415)
    assert await all_key_ids(client, admin_headers) == []
    for ok in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        r = await client.post("/v1/keys", content=b'{"name": "x"}', headers={**admin_headers, "Content-Type": ok})
        assert r.status_code == 201, (ok, r.text)


async def test_roll_body_rules(client, admin_headers):
    a = await mint(client, admin_headers, algorithm="EdDSA")
    form = {**admin_headers, "Content-Type": "application/x-www-form-urlencoded"}
    is_problem(await client.post(f"/v1/keys/{a['id']}/roll", content=b"grace_seconds=0", headers=form), 415)
    for raw in (b"{", b"[]", b'{"grace": 1}', b'{"grace_seconds": "1"}', b'{"grace_seconds": -1}',
                b'{"expires_in": 0}', b'{"grace_seconds": 1e99}'):
        r = await client.post(f"/v1/keys/{a['id']}/roll", content=raw, headers={**admin_headers, **JSON})
        assert 400 <= r.status_code < 500, (raw, r.text)
        is_problem(r)
    assert (await client.get(f"/v1/keys/{a['id']}", headers=admin_headers)).json()["state"] == "active"
    # no body at all, or a JSON null: the defaults
    r = await client.post(f"/v1/keys/{a['id']}/roll", headers=admin_headers)
    assert r.status_code == 201, r.text
    r = await client.post(f"/v1/keys/{r.json()['id']}/roll", content=b"null", headers={**admin_headers, **JSON})
    assert r.status_code == 201, r.text


async def test_oversized_bodies_are_413(client, admin_headers):
    big = json.dumps({"name": "a" * 70000}).encode()
    is_problem(await client.post("/v1/keys", content=big, headers={**admin_headers, **JSON}), 413)
    a = await mint(client, admin_headers, algorithm="EdDSA")
    is_problem(await client.post(f"/v1/keys/{a['id']}/roll", content=b'{"x": "' + b"a" * 70000 + b'"}',
                                 headers={**admin_headers, **JSON}), 413)
    is_problem(await client.post("/oauth/introspect", data={"token": "a" * 70000}, headers=admin_headers), 413)
    is_problem(await client.post("/oauth/introspect", json={"token": "a" * 70000}, headers=admin_headers), 413)
    # just under the limit is fine (and refused for its content, not its size)
    r = await client.post("/v1/keys", content=b'{"name": "' + b"a" * 65000 + b'"}', headers={**admin_headers, **JSON})
    assert r.status_code == 400
    assert await all_key_ids(client, admin_headers) == [a["id"]]


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_QUERIES = {
    "limit zero": {"limit": "0"},
    "limit huge": {"limit": str(10**30)},
    "limit text": {"limit": "ten"},
    "limit over max": {"limit": "501"},
    "state bogus": {"state": "bogus"},
    "subject NUL": {"subject": "a\x00"},
    "subject empty": {"subject": ""},
    "subject too long": {"subject": "s" * 300},
    "q NUL": {"q": "\x00"},
    "q too long": {"q": "q" * 201},
    "cursor not base64": {"cursor": "%%%"},
    "cursor NUL id": {"cursor": _cursor(b"1:\x00")},
    "cursor huge time": {"cursor": _cursor(b"99999999999999999999999:abc")},
    "cursor negative": {"cursor": _cursor(b"-1:abc")},
    "cursor no colon": {"cursor": _cursor(b"12345")},
    "cursor bad utf-8": {"cursor": _cursor(b"\xff\xfe:abc")},
    "cursor too long": {"cursor": "A" * 1000},
}


async def test_bad_queries_and_ids_are_4xx(client, admin_headers):
    await mint(client, admin_headers, algorithm="EdDSA", subject="s1")
    failures: list = []
    for label, params in BAD_QUERIES.items():
        _check_4xx(failures, label, await client.get("/v1/keys", params=params, headers=admin_headers))
    for path in ("/v1/keys/a%00b", "/v1/keys/" + "x" * 65, "/v1/keys/a%20b", "/v1/keys/%C3%A9", "/v1/keys/a;b",
                 "/v1/keys/a%0Ab"):
        for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/roll")):
            r = await client.request(method, path + suffix, headers=admin_headers)
            _check_4xx(failures, f"{method} {path}", r)
    assert failures == []
    assert len(await all_key_ids(client, admin_headers)) == 1


async def test_bad_audit_queries_are_4xx(client, admin_headers):
    for params in ({"before_id": str(2**63)}, {"before_id": "-1"}, {"before_id": "x"}, {"limit": "0"},
                   {"limit": "501"}):
        r = await client.get("/v1/audit", params=params, headers=admin_headers)
        assert 400 <= r.status_code < 500, (params, r.text)
        is_problem(r)
    r = await client.get("/v1/audit", params={"before_id": str(2**63 - 1)}, headers=admin_headers)
    assert r.status_code == 200 and r.json()["data"]


async def test_unknown_routes_and_methods(client, admin_headers):
    is_problem(await client.get("/nope"), 404)
    is_problem(await client.get("/v1/keys/a/b/c", headers=admin_headers), 404)
    is_problem(await client.put("/v1/keys", headers=admin_headers), 405)
    is_problem(await client.put("/v1/keys/" + "A" * 43, headers=admin_headers), 405)
    is_problem(await client.patch("/v1/keys/" + "A" * 43, headers=admin_headers), 415)  # PATCH takes JSON
    is_problem(await client.get("/v1/keys/" + "A" * 43 + "/roll", headers=admin_headers), 405)


async def test_database_data_errors_become_422_not_500(database_url):
    """The last line of defence in problems.py: a value the database refuses
    (NUL in text on PostgreSQL, an integer beyond 64 bits on either) is the
    request's fault. Feed it the real exceptions of this backend."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from authserver.problems import on_unexpected

    engine = create_async_engine(database_url)
    caught = []
    try:
        async with engine.connect() as conn:
            statements = [(text("SELECT :x"), {"x": 10**30})]
            if not database_url.startswith("sqlite"):
                statements.append((text("SELECT CAST(:x AS TEXT)"), {"x": "a\x00b"}))
            for stmt, params in statements:
                try:
                    await conn.execute(stmt, params)
                except Exception as exc:  # noqa: BLE001 - the point is to catch what the driver raises
                    caught.append(exc)
                    await conn.rollback()
    finally:
        await engine.dispose()
    assert len(caught) == (1 if database_url.startswith("sqlite") else 2)
    request = SimpleNamespace(method="POST", url=SimpleNamespace(path="/v1/keys"))
    for exc in caught:
        r = on_unexpected(request, exc)
        assert r.status_code == 422, exc
        assert r.media_type == "application/problem+json"
    # and a genuine bug is still a 500 (logged), not disguised as bad input
    r = on_unexpected(request, KeyError("bug"))
    assert r.status_code == 500


@pytest.mark.parametrize("spec", [{"name": "a\x00b"}, {"subject": "a\r\nb"}, {"metadata": {"k": "\x00"}}],
                         ids=["nul-name", "crlf-subject", "nul-metadata"])
async def test_the_service_itself_refuses_control_characters(make_settings, tenant, spec):
    from authserver.errors import InvalidInput
    from authserver.offline import open_core
    from authserver.services import Actor, KeySpec

    async with open_core(make_settings()) as core:
        with pytest.raises(InvalidInput):
            await core.lifecycle.mint("default", KeySpec(algorithm="EdDSA", **spec), Actor("test"))
