"""Push through the real Envoy 1.40: new keys and revocations reach it over
xDS within a second while its JWKS cache is the default 300 s, and it fails
static when authserver is gone.

One server (subprocess, temp SQLite, AUTHSERVER_XDS_PORT set) for the module;
each test starts the Envoys it needs from the config `authserver gateway envoy
--xds` prints. The kill test runs last: it restarts the server.
"""

from __future__ import annotations

import re
import time

import pytest
from _env import METRICS_HEADERS
from envoy_stack import as_json, dump_logs, run_cli

from authserver_devtools import free_port, wait_until

pytestmark = pytest.mark.envoy

CACHE = 300  # Envoy's JWKS cache and AUTHSERVER_GATEWAY_CACHE_SECONDS: pull alone would take up to this long
BOUND = 1.0  # the bound for push: revoke -> 401 and mint -> 200
NODES = "authserver-gateway-default=default,authserver-gateway-sharded=sharded,other-node=default"


async def _plan(stack, core) -> None:
    from authserver.services import Actor, KeySpec

    actor = Actor("push-tests")
    for tenant in ("default", "sharded"):
        _, admin = await core.tenants.create_tenant(tenant, algorithm="ES256", actor=actor)
        stack.admin[tenant] = admin.key
    await core.tenants.set_shard_count("sharded", 3, actor)
    for name, tenant, scopes in (("early", "default", ["read"]), ("revoke_before_kill", "default", []),
                                 ("revoke_while_down", "default", []), ("shard_early", "sharded", [])):
        row, minted = await core.lifecycle.mint(tenant, KeySpec(name=name, scopes=scopes), actor)
        stack.keys[name] = {"id": row.id, "key": minted.key}


@pytest.fixture(scope="module")
def stack(make_stack):
    port = free_port()  # picked just before the server binds it (not at import: it may be taken by then)
    return make_stack(_plan, cache_seconds=CACHE, env={
        "AUTHSERVER_XDS_PORT": str(port), "AUTHSERVER_XDS_NODES": NODES,
    })


def _envoy(stack, tenant: str = "default", name: str = "push", *extra: str):
    config, listen, admin = stack.envoy_config_from_cli(tenant, "--xds", stack.grpc_address, *extra)
    gw = stack.start_envoy(config, listen, admin, f"{name}-{listen}")
    # the first push arrived (the listener also opens on the default configs after 5 s)
    wait_until(lambda: gw.stats("extension_config_discovery").get("update_success", 0) >= 1, 10,
               what="first push")
    return gw


@pytest.fixture(scope="module")
def gw(stack):
    return _envoy(stack, "default", "default", "--require-scope", "/write=write")


def _metric(stack, name: str) -> float:
    text = stack.http.get(f"{stack.url}/metrics", headers=METRICS_HEADERS).text
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    return sum(values)


def test_a_key_minted_after_envoy_started_works_within_a_second(stack, gw, request):
    try:
        for i in range(3):
            key = stack.mint(name=f"new-{i}")
            took = gw.wait_status(key["key"], 200, timeout=BOUND, interval=0.01)
            assert took < BOUND
        # the JWKS pull could not have done it: Envoy fetched once, before these keys existed
        assert gw.stats()["jwks_fetch_success"] == 1
    finally:
        if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
            print(dump_logs(stack))


def test_a_revoked_key_is_refused_within_a_second_with_our_401(stack, gw):
    early = stack.keys["early"]
    fresh = stack.mint(name="fresh-then-revoked")
    gw.wait_status(fresh["key"], 200, timeout=BOUND, interval=0.01)
    for key in (early, fresh):  # one from the pulled JWKS, one from the pushed recent keys
        assert gw.status(key["key"]) == 200
        stack.revoke(key["id"])
        assert gw.wait_status(key["key"], 401, timeout=BOUND, interval=0.01) < BOUND
        body = as_json(gw.get(key=key["key"]))
        assert body["code"] == "unauthorized" and body["status"] == 401
    assert gw.stats()["jwks_fetch_success"] == 1  # still the one fetch: push did it


def test_the_gate_trusts_only_a_verified_key(stack, gw):
    key = stack.mint(name="gate", scopes=["read"])
    gw.wait_status(key["key"], 200, timeout=BOUND)
    # no key, a garbage key, a client-sent key id: 401 with our body
    for headers in ({}, {"Authorization": "Bearer sk_live_abc"}, {"x-api-key-id": key["id"]},
                    {"Authorization": "Bearer sk_live_abc", "x-api-key-id": key["id"]}):
        r = gw.get(headers=headers)
        assert r.status_code == 401 and as_json(r)["code"] == "unauthorized", headers
    # a forged claim header is replaced by the verified one; the key never reaches the upstream
    echo = as_json(gw.get(key=key["key"], headers={"x-api-key-id": "forged", "x-api-key-scope": "admin"}))
    assert echo["api_key"] == {"id": key["id"], "subject": key["id"], "scope": "read"}
    assert "authorization" not in echo["headers"]
    # scopes still answer 403 (not the gate's 401)
    assert gw.status(key["key"], "/write") == 403
    writer = stack.mint(name="writer", scopes=["write"])
    assert gw.wait_status(writer["key"], 200, timeout=BOUND, path="/write") < BOUND


def test_the_end_of_a_grace_period_reaches_envoy(stack, gw):
    old = stack.mint(name="rolled")
    gw.wait_status(old["key"], 200, timeout=BOUND)
    new = stack.roll(old["id"], grace_seconds=2)
    gw.wait_status(new["key"], 200, timeout=BOUND)
    assert gw.status(old["key"]) == 200  # in grace
    grace_end = time.monotonic() + 2
    gw.wait_status(old["key"], 401, timeout=2 + BOUND + 0.5, interval=0.02)
    assert time.monotonic() - grace_end < BOUND
    assert gw.status(new["key"]) == 200


def _expiring(gw, key: dict) -> str | None:
    r = gw.get(key=key["key"])
    return r.headers.get("x-api-key-expiring") if r.status_code == 200 else None


def test_calls_with_a_rolled_key_say_when_it_stops_working(stack, gw):
    from authserver.gateways.push import rfc3339

    old, other = stack.mint(name="to-roll"), stack.mint(name="bystander")
    gw.wait_status(old["key"], 200, timeout=BOUND)
    gw.wait_status(other["key"], 200, timeout=BOUND)
    assert _expiring(gw, old) is None

    rolled = stack.roll(old["id"], grace_seconds=3600)
    returned = time.monotonic()
    ends = rfc3339(rolled["previous"]["grace_ends_at"])
    wait_until(lambda: _expiring(gw, old) == ends, BOUND, interval=0.01, what="X-API-Key-Expiring")
    took = time.monotonic() - returned
    print(f"\nroll returned -> X-API-Key-Expiring at Envoy: {took * 1000:.0f} ms")
    assert took < BOUND
    gw.wait_status(rolled["key"], 200, timeout=BOUND)
    # only the old key's calls carry it; a forged key id header does not borrow it
    assert _expiring(gw, rolled) is None and _expiring(gw, other) is None
    forged = gw.get(key=other["key"], headers={"x-api-key-id": old["id"]})
    assert forged.status_code == 200 and "x-api-key-expiring" not in forged.headers

    stack.revoke(old["id"])  # revoked during its grace: refused, and no header
    gw.wait_status(old["key"], 401, timeout=BOUND, interval=0.01)
    assert "x-api-key-expiring" not in gw.get(key=old["key"]).headers

    # the end of a grace period takes the header away with the key
    short = stack.mint(name="short-grace")
    gw.wait_status(short["key"], 200, timeout=BOUND)
    stack.roll(short["id"], grace_seconds=2)
    wait_until(lambda: _expiring(gw, short) is not None, BOUND, interval=0.01, what="the header")
    gw.wait_status(short["key"], 401, timeout=2 + BOUND + 0.5, interval=0.02)
    assert "x-api-key-expiring" not in gw.get(key=short["key"]).headers


def test_a_sharded_tenant_gets_only_recent_keys_pushed(stack):
    sgw = _envoy(stack, "sharded", "sharded")
    try:
        assert sgw.status(stack.keys["shard_early"]["key"]) == 200
        keys = [stack.mint("sharded", name=f"s{i}") for i in range(3)]
        assert {k["prefix"] for k in keys} == {"sk_live_s0_", "sk_live_s1_", "sk_live_s2_"}  # least-loaded
        for key in keys:
            assert sgw.wait_status(key["key"], 200, timeout=BOUND, interval=0.01) < BOUND
        stack.revoke(keys[1]["id"], "sharded")
        assert sgw.wait_status(keys[1]["key"], 401, timeout=BOUND, interval=0.01) < BOUND
        assert sgw.status(keys[0]["key"]) == 200 and sgw.status(keys[2]["key"]) == 200
        # the default tenant's keys are not this gateway's
        assert sgw.status(stack.keys["early"]["key"]) == 401
    finally:
        stack.stop_envoy(sgw)


def test_metrics_show_connected_envoys_pushes_and_acks(stack, gw):
    before = _metric(stack, "authserver_xds_pushes_total")
    key = stack.mint(name="metrics")
    gw.wait_status(key["key"], 200, timeout=BOUND)
    wait_until(lambda: _metric(stack, "authserver_xds_push_seconds_count") > 0, 2, what="an ACK timed")
    assert _metric(stack, "authserver_xds_pushes_total") > before
    assert _metric(stack, "authserver_xds_connected_envoys") >= 1
    assert _metric(stack, "authserver_xds_acked_version") > 0
    assert _metric(stack, "authserver_xds_nacks_total") == 0


def test_zz_envoy_fails_static_and_catches_up_after_a_restart(stack, gw):
    """Runs last in the module: kills the server."""
    live = stack.mint(name="live-across-kill")
    gw.wait_status(live["key"], 200, timeout=BOUND)
    gone = stack.keys["revoke_before_kill"]
    stack.revoke(gone["id"])
    gw.wait_status(gone["key"], 401, timeout=BOUND)

    stack.server.kill()  # kill -9: no goodbye on the stream
    time.sleep(1.5)
    # offline validation goes on with what Envoy has
    for _ in range(20):
        assert gw.status(live["key"]) == 200
        assert gw.status(stack.keys["early"]["key"]) == 401  # revoked earlier in the module
        assert gw.status(gone["key"]) == 401

    # changes while the control plane is down: made by the CLI on the database
    down = stack.keys["revoke_while_down"]
    assert gw.status(down["key"]) == 200
    run_cli(stack.env, "keys", "revoke", down["id"])
    minted = as_json_cli(run_cli(stack.env, "keys", "mint", "--name", "while-down", "--json").stdout)
    assert gw.status(minted["key"]) == 401  # unknown to Envoy until it hears from us

    stack.server.start(timeout=60)
    wait_until(lambda: _metric(stack, "authserver_xds_connected_envoys") >= 1, 10, interval=0.02,
               what="Envoy reconnected")
    reconnected = time.monotonic()
    gw.wait_status(down["key"], 401, timeout=BOUND, interval=0.01)
    gw.wait_status(minted["key"], 200, timeout=BOUND, interval=0.01)
    assert time.monotonic() - reconnected < BOUND
    assert gw.status(live["key"]) == 200


def as_json_cli(text: str) -> dict:
    import json

    return json.loads(text)
