"""Usage from the real Envoy's access logs (http_grpc -> authserver's
AccessLogService): per-key counts by status class and last_used_at, written in
batches; stale keys found by unused_for; no key string stored or logged."""

from __future__ import annotations

import sqlite3
import time

import pytest
from envoy_stack import as_json

from authserver_devtools import free_port, wait_until

pytestmark = pytest.mark.envoy



async def _plan(stack, core) -> None:
    from authserver.services import Actor, KeySpec

    actor = Actor("usage-tests")
    _, admin = await core.tenants.create_tenant("default", algorithm="ES256", actor=actor)
    stack.admin["default"] = admin.key
    for name in ("used", "revoked", "stale", "idle"):
        row, minted = await core.lifecycle.mint("default", KeySpec(name=name), actor)
        stack.keys[name] = {"id": row.id, "key": minted.key}


@pytest.fixture(scope="module")
def stack(make_stack):
    port = free_port()  # picked just before the server binds it (not at import: it may be taken by then)
    return make_stack(_plan, env={
        "AUTHSERVER_XDS_PORT": str(port), "AUTHSERVER_XDS_NODES": "authserver-gateway-default=default",
        "AUTHSERVER_USAGE_FLUSH_SECONDS": "0.5",
    })


@pytest.fixture(scope="module")
def gw(stack):
    config, listen, admin = stack.envoy_config_from_cli(
        "default", "--xds", stack.grpc_address, "--accesslog", stack.grpc_address)
    return stack.start_envoy(config, listen, admin, "usage")


def _get(stack, path: str, **params) -> dict:
    r = stack.http.get(stack.url + path, params=params,
                       headers={"Authorization": f"Bearer {stack.admin['default']}"})
    assert r.status_code == 200, r.text
    return as_json(r)


def test_calls_show_up_as_usage_and_last_used_at(stack, gw):
    used, revoked = stack.keys["used"], stack.keys["revoked"]
    assert _get(stack, f"/v1/keys/{used['id']}")["last_used_at"] is None
    stack.revoke(revoked["id"])
    gw.wait_status(revoked["key"], 401, timeout=2)
    t0 = time.time()
    for _ in range(5):
        assert gw.status(used["key"]) == 200
    assert gw.status(used["key"], "/missing") == 200  # the echo upstream answers every path
    assert gw.status(None) == 401  # no key: not counted for anyone
    called = time.monotonic()
    view = wait_until(lambda: (v := _get(stack, f"/v1/keys/{used['id']}"))["last_used_at"] and v, 5,
                      interval=0.05, what="last_used_at")
    print(f"last_used_at visible {time.monotonic() - called:.2f} s after the call")
    assert int(t0) - 1 <= view["last_used_at"] <= time.time() + 1
    wait_until(lambda: _get(stack, f"/v1/keys/{used['id']}")["usage_totals"]["2xx"] == 6, 5, what="totals")
    assert _get(stack, f"/v1/keys/{used['id']}")["usage_totals"] == {"2xx": 6, "3xx": 0, "4xx": 0, "5xx": 0}
    # the revoked key's refused calls are its usage too (someone still uses it)
    wait_until(lambda: _get(stack, f"/v1/keys/{revoked['id']}")["usage_totals"]["4xx"] >= 1, 5, what="4xx")

    series = _get(stack, f"/v1/keys/{used['id']}/usage", granularity="hour")
    assert sum(p["2xx"] for p in series["data"]) == 6 and series["granularity"] == "hour"
    assert all(p["start"] % 3600 == 0 for p in series["data"])
    day = _get(stack, f"/v1/keys/{used['id']}/usage", granularity="day",
               **{"from": int(time.time()) - 7 * 86400, "to": int(time.time()) + 1})
    assert sum(p["2xx"] for p in day["data"]) == 6 and all(p["start"] % 86400 == 0 for p in day["data"])


def test_bad_usage_queries_are_4xx(stack):
    kid = stack.keys["used"]["id"]
    h = {"Authorization": f"Bearer {stack.admin['default']}"}
    for params in ({"granularity": "week"}, {"from": 10, "to": 5}, {"from": -1}, {"from": 0, "to": 10**12}):
        r = stack.http.get(f"{stack.url}/v1/keys/{kid}/usage", params=params, headers=h)
        assert r.status_code in (400, 422), (params, r.status_code, r.text)
    assert stack.http.get(f"{stack.url}/v1/keys/nope/usage", headers=h).status_code == 404
    assert stack.http.get(f"{stack.url}/v1/keys", params={"unused_for": "soon"}, headers=h).status_code in (400, 422)


def test_unused_for_finds_stale_keys(stack, gw):
    stale = stack.keys["stale"]
    db = stack.db_url.split("///", 1)[1]
    with sqlite3.connect(db) as conn:  # pretend it was minted 40 days ago and never used since
        conn.execute("UPDATE api_keys SET created_at = created_at - 40 * 86400 WHERE id = ?", (stale["id"],))
    ids = [k["id"] for k in _get(stack, "/v1/keys", unused_for="30d", state="live")["data"]]
    assert ids == [stale["id"]]  # "idle" is new, "used" was just used
    # unused for 0 s: every key not used in the current second, "used" too once a second has passed
    wait_until(lambda: stack.keys["used"]["id"] in [k["id"] for k in _get(stack, "/v1/keys", unused_for="0s")["data"]],
               3, interval=0.1, what="the used key, a second later")


def test_no_key_string_in_usage_tables_or_logs(stack, gw):
    wait_until(lambda: _get(stack, f"/v1/keys/{stack.keys['used']['id']}")["usage_totals"]["2xx"] >= 6, 5,
               what="usage written")
    db = stack.db_url.split("///", 1)[1]
    with sqlite3.connect(db) as conn:
        usage = repr(conn.execute("SELECT * FROM key_usage").fetchall())
    secrets = [k["key"] for k in stack.keys.values()]
    signatures = [k.rsplit(".", 1)[1] for k in secrets]
    assert stack.keys["used"]["id"] in usage  # key ids, by design
    for secret in secrets + signatures:
        assert secret not in usage
        assert secret not in stack.server.log()
