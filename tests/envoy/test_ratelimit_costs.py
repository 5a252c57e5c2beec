"""Through the real Envoy, counted by authserver's rate-limit service in a
Redis of this module's own: per-route cost (``--route-cost``, Envoy's
``hits_addend``) against a key's windows and credits; limits shared by the
keys of one subject, changed by the API and by the CLI (another process: the
change notice) within a second; and, after all that traffic, no key string,
JWT or signature anywhere in Redis (every key and value, every notice
published), the database or the logs."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid

import pytest
from _env import METRICS_HEADERS
from _proc import ThrowawayRedis
from envoy_stack import as_json, dump_logs, rls_answers_every_call, run_cli

from authserver_devtools import free_port, wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.redis]

SUBJECT = "customer-1"


async def _plan(stack, core) -> None:
    from authserver.schemas import key_spec
    from authserver.services import Actor

    actor = Actor("cost-tests")
    _, admin = await core.tenants.create_tenant("default", algorithm="ES256", actor=actor)
    stack.admin["default"] = admin.key
    specs = {
        # hour windows: a minute boundary during the test cannot change the counts by a call
        "priced": {"rate_limits": [{"limit": 12, "window_seconds": 3600}], "credits": {"remaining": 8}},
        "cust_a": {"subject": SUBJECT}, "cust_b": {"subject": SUBJECT},
        "plain": {}, "revoked": {"rate_limits": [{"limit": 100, "window_seconds": 60}]},
    }
    for name, spec in specs.items():
        row, minted = await core.lifecycle.mint("default", key_spec({"name": name, **spec}), actor)
        stack.keys[name] = {"id": row.id, "key": minted.key}


class Notices:
    """Every message published on the module's Redis (change notices included)."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("*")
        self.seen: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            msg = self.pubsub.get_message(timeout=0.2)
            if msg is not None:
                self.seen.append(bytes(msg["channel"]) + b" " + bytes(msg["data"]))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.pubsub.close()
        self.client.close()


@pytest.fixture(scope="module")
def redis_server():
    r = ThrowawayRedis().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def notices(redis_server):
    n = Notices(redis_server.url)
    yield n
    n.close()


@pytest.fixture(scope="module")
def stack(make_stack, redis_server, notices):
    port = free_port()
    return make_stack(_plan, env={
        "AUTHSERVER_XDS_PORT": str(port), "AUTHSERVER_XDS_NODES": "authserver-gateway-default=default",
        "AUTHSERVER_REDIS_URL": redis_server.url, "AUTHSERVER_REDIS_NAMESPACE": f"cost-{uuid.uuid4().hex[:8]}",
        "AUTHSERVER_USAGE_FLUSH_SECONDS": "0.5", "AUTHSERVER_LOG_LEVEL": "DEBUG",
        # the admin API's own limits count in Redis too (by admin key id, and client address for failures)
        "AUTHSERVER_RATE_LIMIT_ADMIN_PER_MINUTE": "1000",
    })


@pytest.fixture(scope="module")
def gw(stack):
    config, listen, admin = stack.envoy_config_from_cli(
        "default", "--xds", stack.grpc_address, "--ratelimit", stack.grpc_address,
        "--accesslog", stack.grpc_address, "--route-cost", "/expensive=5")
    return stack.start_envoy(rls_answers_every_call(config), listen, admin, "costs")


def _h(stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.admin['default']}"}


def _decisions(stack, result: str) -> float:
    text = stack.http.get(f"{stack.url}/metrics", headers=METRICS_HEADERS).text
    m = re.search(rf'^authserver_ratelimit_decisions_total{{result="{result}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_a_priced_route_counts_its_cost_against_windows_and_credits(stack, gw):
    key = stack.keys["priced"]["key"]

    def call(path: str) -> tuple[int, str | None, str | None, str | None]:
        r = gw.get(path, key=key)
        code = as_json(r)["code"] if r.status_code == 429 else None
        return r.status_code, code, r.headers.get("x-credits-remaining"), r.headers.get("ratelimit-remaining")

    assert call("/expensive/report") == (200, None, "3", "7")  # 5 of 8 credits, 5 of 12 in the window
    # 3 credits left: refused with nothing spent, and not counted in the window either
    got = call("/expensive")
    assert got[:3] == (429, "usage_exceeded", "0"), (got, dump_logs(stack))
    assert call("/cheap") == (200, None, "2", "6")  # the window holds 6: the refused 5 were taken back
    assert call("/") == (200, None, "1", "5")
    assert stack.http.get(f"{stack.url}/v1/keys/{stack.keys['priced']['id']}",
                          headers=_h(stack)).json()["credits"]["remaining"] == 1
    r = stack.http.patch(f"{stack.url}/v1/keys/{stack.keys['priced']['id']}", json={"credits": {"remaining": 100}},
                         headers=_h(stack))
    assert r.status_code == 200, r.text
    assert call("/expensive") == (200, None, "95", "0")  # 7 + 5 = 12: the window is full
    assert call("/cheap")[:2] == (429, "rate_limited")
    assert stack.http.get(f"{stack.url}/v1/keys/{stack.keys['priced']['id']}",
                          headers=_h(stack)).json()["credits"]["remaining"] == 95  # the refusal spent nothing


def test_two_keys_of_one_subject_share_its_budget(stack, gw):
    a, b = stack.keys["cust_a"]["key"], stack.keys["cust_b"]["key"]
    before = _decisions(stack, "unlimited")
    assert [gw.status(k) for k in (a, b, a, b)] == [200] * 4
    assert _decisions(stack, "unlimited") - before == 4  # no limits anywhere: no Redis round trip
    url = f"{stack.url}/v1/subjects/{SUBJECT}/limits"
    r = stack.http.put(url, json={"rate_limits": [{"limit": 3, "window_seconds": 3600}]}, headers=_h(stack))
    assert r.status_code == 200, r.text
    # in effect at the next call (the server that answered the PUT holds it)
    got = [gw.get(key=k) for k in (a, b, a, b, a)]
    assert [r.status_code for r in got] == [200, 200, 200, 429, 429]  # 3 per hour between both keys
    assert as_json(got[3])["code"] == "rate_limited" and got[3].headers["ratelimit-limit"] == "3"
    assert 1 <= int(got[3].headers["retry-after"]) <= 3600

    # the CLI is another process: the server learns of its change by the change notice
    run_cli(stack.env, "subjects", "limits", SUBJECT, "--rate-limit", "5/h")
    changed = time.monotonic()
    wait_until(lambda: gw.status(b) == 200, 1.0, interval=0.02, what="the CLI's new subject limit")
    print(f"subject limit changed by the CLI, in effect at the gateway after {time.monotonic() - changed:.3f} s")
    # 4 of 5 now (the refusals counted nowhere): one more, then refused
    assert [gw.status(a), gw.status(b)] == [200, 429]
    run_cli(stack.env, "subjects", "limits", SUBJECT, "--clear")
    wait_until(lambda: gw.status(a) == 200, 1.0, interval=0.02, what="the subject limit removed")
    before = _decisions(stack, "unlimited")
    assert gw.status(b) == 200 and _decisions(stack, "unlimited") - before == 1  # no round trip again


def test_zz_no_key_string_jwt_or_signature_in_redis_the_database_or_logs(stack, gw, redis_server, notices):
    import redis

    # a revoked key used, a key of another shape, a garbled one: more log lines that could leak
    revoked = stack.keys["revoked"]
    assert gw.status(revoked["key"]) == 200
    stack.revoke(revoked["id"])
    gw.wait_status(revoked["key"], 401, timeout=3)
    plain = stack.keys["plain"]["key"]
    garbled = plain[:-20] + ("A" if plain[-20] != "A" else "B") + plain[-19:]  # one signature character changed
    assert gw.status(garbled) == 401
    assert gw.status(stack.keys["plain"]["key"]) == 200
    r = stack.http.post(f"{stack.url}/oauth/introspect", data={"token": stack.keys["priced"]["key"]},
                        headers=_h(stack))
    assert r.status_code == 200 and r.json()["active"] is True
    # an API key where an admin key belongs: refused, and counted as a failure by client address
    assert stack.http.get(f"{stack.url}/v1/keys", headers={
        "Authorization": f"Bearer {stack.keys['plain']['key']}"}).status_code == 401
    wait_until(lambda: stack.http.get(f"{stack.url}/v1/keys/{stack.keys['priced']['id']}", headers=_h(stack))
               .json()["usage_totals"] == {"2xx": 4, "3xx": 0, "4xx": 2, "5xx": 0}, 5, what="usage written")

    secrets = []
    for key in [k["key"] for k in stack.keys.values()] + [stack.admin["default"]]:
        jwt = key[key.index("eyJ"):]  # the JWT after the visible prefix (sk_live_, sk_admin_)
        assert jwt.count(".") == 2
        secrets += [key, jwt, jwt.rsplit(".", 1)[1]]

    # Redis: every key name and every value, whatever its type
    client = redis.Redis.from_url(redis_server.url)
    try:
        dumped: list[bytes] = []
        names = list(client.scan_iter("*", count=1000))
        assert names, "the rate limits counted nothing in Redis"
        for name in names:
            kind = client.type(name)
            value: object = {
                b"string": lambda n: client.get(n), b"hash": lambda n: client.hgetall(n),
                b"zset": lambda n: client.zrange(n, 0, -1, withscores=True), b"list": lambda n: client.lrange(n, 0, -1),
                b"set": lambda n: client.smembers(n), b"stream": lambda n: client.xrange(n),
            }.get(kind, lambda n: b"")(name)
            dumped.append(name + b" " + repr(value).encode())
        redis_text = b"\n".join(dumped + notices.seen).decode(errors="replace")
    finally:
        client.close()
    assert any(stack.keys["priced"]["id"] in line for line in redis_text.splitlines())  # key ids, by design
    assert notices.seen, "no change notice was seen"

    db = stack.db_url.split("///", 1)[1]
    with sqlite3.connect(db) as conn:
        usage = repr(conn.execute("SELECT * FROM key_usage").fetchall())
        database = "\n".join(conn.iterdump())
    assert stack.keys["priced"]["id"] in usage
    logs = stack.server.log() + "".join(g.proc.log() for g in stack.gateways)
    for secret in secrets:
        assert secret not in redis_text, "a key string, JWT or signature in Redis"
        assert secret not in usage and secret not in database, "a key string, JWT or signature in the database"
        assert secret not in logs, "a key string, JWT or signature in the logs"
