"""keys.hazmat.KeypairPool and the server's fast-mint path."""

from __future__ import annotations

import sys

import jwt as pyjwt
import pytest
from _env import METRICS_HEADERS

import keys
import keys.hazmat


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_pool_fills_to_capacity_and_mints_verifiable_keys():
    clock = Clock()
    pool = keys.hazmat.KeypairPool("ES256", 3, max_age=60, clock=clock)
    while pool.fill_one():
        pass
    assert len(pool) == 3 and pool.fill_one() is None
    published = {j["kid"] for j in pool.public_jwks()}
    m = pool.mint({"iss": "i", "aud": "a"}, prefix="sk_live_", clock=clock)
    assert m is not None and m.kid in published and len(pool) == 2
    claims = pyjwt.decode(m.key[len("sk_live_"):], pyjwt.PyJWK(m.public_jwk).key, algorithms=["ES256"], audience="a")
    assert claims["jti"] == m.kid
    assert m.kid not in {j["kid"] for j in pool.public_jwks()}  # each keypair signs once


def test_pool_respects_min_age_and_evicts_old_keypairs():
    clock = Clock()
    pool = keys.hazmat.KeypairPool("EdDSA", 2, max_age=100, clock=clock)
    pool.fill_one()
    assert pool.mint({}, prefix="sk_live_", min_age=10, clock=clock) is None  # too young
    assert pool.public_jwks(older_than=10) == []
    clock.t += 10
    assert len(pool.public_jwks(older_than=10)) == 1
    clock.t += 95
    assert len(pool.evict()) == 1 and len(pool) == 0


def test_pooled_private_key_is_released_after_signing(monkeypatch):
    import dataclasses

    alg = keys.get_algorithm("EdDSA")
    captured = []

    def generate():
        key = alg.generate()
        captured.append(key)
        return key

    monkeypatch.setitem(keys.hazmat.ALGORITHMS, "EdDSA", dataclasses.replace(alg, generate=generate))
    pool = keys.hazmat.KeypairPool("EdDSA", 1, max_age=60)
    pool.fill_one()
    held_by_pool = sys.getrefcount(captured[0])
    pool.mint({}, prefix="sk_live_")
    after = sys.getrefcount(captured[0])  # outside the assert: pytest's rewriting holds temporaries
    # the pool's reference is gone: only our list (and getrefcount's argument) remain
    assert (held_by_pool, after) == (3, 2)


def test_pool_rejects_bad_configuration():
    with pytest.raises(ValueError):
        keys.hazmat.KeypairPool("RS256", 0, 60)
    with pytest.raises(keys.UnsupportedAlgorithm):
        keys.hazmat.KeypairPool("HS256", 1, 60)


async def test_server_mints_from_the_pool(tenant, client_factory):
    client = await client_factory(mint_pool_size=2, mint_pool_algorithms="RS256")
    core = client.app.state.core
    h = {"Authorization": f"Bearer {tenant[1]}"}
    import asyncio

    for _ in range(200):  # the background task fills the pool
        if len(core.keygen.pools["RS256"]) == 2:
            break
        await asyncio.sleep(0.05)
    assert len(core.keygen.pools["RS256"]) == 2
    # the gauge says so (the benchmark waits on it before timing pooled mints)
    scraped = (await client.get("/metrics", headers=METRICS_HEADERS)).text
    assert 'authserver_mint_pool_keypairs{alg="RS256"} 2.0' in scraped
    r = await client.post("/v1/keys", json={"name": "fast"}, headers=h)
    assert r.status_code == 201
    assert core.keygen.pool_hits == 1
    jwks = (await client.get("/.well-known/jwks.json")).json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == r.json()["id"])
    pyjwt.decode(r.json()["key"][len("sk_live_"):], pyjwt.PyJWK(jwk).key, algorithms=["RS256"],
                 audience="api://default")


def test_pool_discards_given_keypairs_and_never_signs_with_them():
    clock = Clock()
    pool = keys.hazmat.KeypairPool("EdDSA", 3, max_age=100, clock=clock)
    while pool.fill_one():
        pass
    kids = [j["kid"] for j in pool.public_jwks()]
    assert pool.discard([kids[0], kids[2], "not-pooled"]) == [kids[0], kids[2]]
    assert [j["kid"] for j in pool.public_jwks()] == [kids[1]] and pool.needed() == 2
    m = pool.mint({}, prefix="sk_live_", clock=clock)
    assert m is not None and m.kid == kids[1]
    assert pool.mint({}, prefix="sk_live_", clock=clock) is None
