"""Helpers for the HTTP tests of the authorization server (issue #3)."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterator
from typing import Any

import jwt as pyjwt
from _env import METRICS_HEADERS
from jwcrypto import jwk as jwc_jwk
from jwcrypto import jwt as jwc_jwt

ISS = "http://testserver.local/t/default"
AUD = "api://default"
JWKS_PATH = "/t/default/.well-known/jwks.json"
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


async def mint(client, headers, expect: int = 201, **body) -> dict:
    r = await client.post("/v1/keys", json=body, headers=headers)
    assert r.status_code == expect, r.text
    return r.json()


async def jwks_keys(client, path: str = JWKS_PATH) -> list[dict]:
    r = await client.get(path)
    assert r.status_code == 200, r.text
    return r.json()["keys"]


async def jwks_kids(client, path: str = JWKS_PATH) -> set[str]:
    return {k["kid"] for k in await jwks_keys(client, path)}


async def all_key_ids(client, headers, state: str = "all", limit: int = 500) -> list[str]:
    """Every key id the management API lists, following cursors."""
    ids: list[str] = []
    cursor = None
    while True:
        params = {"state": state, "limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/v1/keys", params=params, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        ids += [k["id"] for k in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            return ids


def is_problem(r, status: int | None = None) -> dict:
    """An RFC 9457 problem: the status, the media type, type/title/status members."""
    if status is not None:
        assert r.status_code == status, (r.status_code, r.text[:500])
    assert 400 <= r.status_code < 600, r.text[:300]
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers["content-type"]
    body = r.json()
    assert body["status"] == r.status_code and body["title"] and body["type"] and body["code"]
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body


def bare_jwt(key: str) -> str:
    """The JWT part of ``<prefix><JWT>``: it starts at 'eyJ' (the header)."""
    return key[key.index("eyJ"):]


def kid_of(key: str) -> str:
    return pyjwt.get_unverified_header(bare_jwt(key))["kid"]


def verify_both(key: str, jwk: dict, alg: str, *, audience: str = AUD, issuer: str = ISS) -> dict:
    """Verify with PyJWT and with jwcrypto against the published JWK; both must agree."""
    token = bare_jwt(key)
    claims = pyjwt.decode(token, pyjwt.PyJWK(jwk).key, algorithms=[alg], audience=audience, issuer=issuer)
    checked = jwc_jwt.JWT(jwt=token, key=jwc_jwk.JWK(**jwk), algs=[alg],
                          check_claims={"iss": issuer, "aud": audience})
    assert json.loads(checked.claims) == claims
    return claims


def walk_strings(value: Any) -> Iterator[str]:
    """Every string (keys included) anywhere in a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from walk_strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from walk_strings(v)


def walk_dicts(value: Any) -> Iterator[dict]:
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from walk_dicts(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from walk_dicts(v)


def secret_parts(key: str) -> list[str]:
    """What must never be stored or shown again: the key, its JWT, its signature."""
    token = bare_jwt(key)
    return [key, token, token.rsplit(".", 1)[1]]


async def metric(client, name: str, labels: str = "") -> float | None:
    text = (await client.get("/metrics", headers=METRICS_HEADERS)).text
    want = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def on_app_loop(client, fn, *args, **kwargs):
    """Run ``await fn(*args, **kwargs)`` on the event loop of the app behind an
    AsyncTestClient (it lives in the client's portal thread: asyncpg connections
    belong to that loop)."""
    call = functools.partial(fn, *args, **kwargs)
    return await asyncio.to_thread(client.blocking_portal.call, call)


async def sharded_tenant(settings: Any, shards: int) -> str:
    """Create the default tenant (EdDSA) spread over ``shards`` JWKS shards,
    before the app starts; returns its admin key."""
    from authserver.offline import open_core
    from authserver.services import Actor

    async with open_core(settings) as core:
        _, admin = await core.tenants.create_tenant("default", algorithm="EdDSA")
        await core.tenants.set_shard_count("default", shards, Actor("test"))
    return admin.key


async def execute_sql(url: str, sql: str) -> None:
    """Run one statement in its own engine (migration tests write rows the
    models can no longer express)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def tenants_table(url: str) -> tuple[list[str], list[dict]]:
    """The tenants table as the database has it: its column names, and its rows by id."""
    from sqlalchemy import inspect, text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            columns = await conn.run_sync(lambda c: [col["name"] for col in inspect(c).get_columns("tenants")])
            rows = (await conn.execute(text("SELECT * FROM tenants ORDER BY id"))).mappings().all()
            return columns, [dict(r) for r in rows]
    finally:
        await engine.dispose()
