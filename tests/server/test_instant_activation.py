"""Instant activation (issue #7): pooled keypairs are published before issue."""

from __future__ import annotations

import functools

import jwt as pyjwt

from authserver_devtools import wait_until_async

wait_for = functools.partial(wait_until_async, timeout=20.0, interval=0.05)


async def test_minted_key_was_published_a_cache_period_before(tenant, client_factory, clock):
    client = await client_factory(instant_activation=True, instant_activation_pool_size=3,
                                  gateway_cache_seconds=60, instant_activation_max_age_seconds=3600,
                                  # the clock jumps 120 s below, too fast for a lease renewal
                                  instant_activation_lease_seconds=3600)
    core = client.app.state.core
    pre = core.prepublisher
    await wait_for(lambda: len(pre.published) == 3)
    jwks = (await client.get("/.well-known/jwks.json")).json()
    published_early = {k["kid"] for k in jwks["keys"]}
    assert pre.published <= published_early
    # nothing pending is listed or verifiable as a key
    h = {"Authorization": f"Bearer {tenant[1]}"}
    assert (await client.get("/v1/keys", headers=h)).json()["data"] == []

    order_before = [k["kid"] for k in jwks["keys"]]
    clock.advance(120)  # the gateways have refreshed since: pooled keys are "aged"
    r = await client.post("/v1/keys", json={"name": "instant"}, headers=h)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] in published_early  # issued from a pre-published keypair
    assert body["gateway_accepts_after"] <= clock()  # works at the first call
    jwks = (await client.get("/.well-known/jwks.json")).json()
    order_after = [k["kid"] for k in jwks["keys"] if k["kid"] in order_before]
    assert order_after == order_before  # issuing keeps the key where gateways already have it
    jwk = next(k for k in jwks["keys"] if k["kid"] == body["id"])
    claims = pyjwt.decode(body["key"][len("sk_live_"):], pyjwt.PyJWK(jwk).key, algorithms=["RS256"],
                          audience="api://default", options={"verify_iat": False})
    assert claims["jti"] == body["id"]
    r = await client.post("/oauth/introspect", data={"token": body["key"]}, headers=h)
    assert r.json()["status"] == "VALID"
    listed = (await client.get("/v1/keys", headers=h)).json()["data"]
    assert [k["id"] for k in listed] == [body["id"]]
    await wait_for(lambda: len(pre.published) == 3)  # the pool refills


async def test_evicted_pending_keys_leave_the_jwks(tenant, client_factory, clock):
    client = await client_factory(instant_activation=True, instant_activation_pool_size=2,
                                  instant_activation_max_age_seconds=100)
    pre = client.app.state.core.prepublisher
    await wait_for(lambda: len(pre.published) == 2)
    first = set(pre.published)
    clock.advance(101)
    pre._wake.set()
    await wait_for(lambda: not (first & pre.published) and len(pre.published) == 2)
    kids = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    assert not first & kids  # their private halves are gone, so are their public ones


async def test_pending_keys_whose_lease_ran_out_are_never_issued_nor_revived(tenant, client_factory, clock):
    """Renewals that fail (here: the clock jumps past the lease before the
    renewal loop runs) mean other replicas may have dropped our pending keys:
    they are discarded, not issued, and fresh ones are published instead."""
    client = await client_factory(instant_activation=True, instant_activation_pool_size=2,
                                  gateway_cache_seconds=1, instant_activation_lease_seconds=30)
    pre = client.app.state.core.prepublisher
    await wait_for(lambda: len(pre.published) == 2)
    first = set(pre.published)
    clock.advance(31)
    h = {"Authorization": f"Bearer {tenant[1]}"}
    r = await client.post("/v1/keys", json={"name": "after"}, headers=h)
    assert r.status_code == 201 and r.json()["id"] not in first
    await wait_for(lambda: not (first & pre.published) and len(pre.published) == 2)
    assert not any(first & {j["kid"] for j in pool.public_jwks()} for pool in pre.pools.values())
    kids = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    assert not first & kids and pre.published <= kids
