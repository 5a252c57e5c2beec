"""Our keys through the real Envoy 1.40 with the config `authserver gateway envoy` prints.

One server (subprocess, temp SQLite) and one Envoy for the default tenant
(cache_duration 2 s, scope rules) for the module; tests that need another
tenant or another cache duration start their own Envoy and stop it.
"""

from __future__ import annotations

import base64
import json
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from envoy_stack import CACHE_SECONDS, SCOPE_RULES, as_json, dump_logs

pytestmark = pytest.mark.envoy

SLACK = 2.0  # the bound: cache_duration + 2 s
REVOCATIONS = 3  # samples of the revocation propagation time


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _parts(key: str, prefix: str = "sk_live_") -> tuple[dict, dict, str]:
    h, p, s = key[len(prefix):].split(".")
    pad = lambda x: x + "=" * (-len(x) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(h))), json.loads(base64.urlsafe_b64decode(pad(p))), s


async def _plan(stack, core) -> None:
    import keys
    from authserver.db.models import ApiKey
    from authserver.services import Actor, KeySpec

    actor = Actor("envoy-tests")
    for tenant in ("default", "other", "solo"):
        _, admin = await core.tenants.create_tenant(tenant, actor=actor)
        stack.admin[tenant] = admin.key
    _, admin = await core.tenants.create_tenant("sharded", algorithm="ES256", actor=actor)
    stack.admin["sharded"] = admin.key
    await core.tenants.set_shard_count("sharded", 2, actor)

    async def mint(name: str, tenant: str = "default", **spec) -> None:
        row, minted = await core.lifecycle.mint(tenant, KeySpec(name=name, **spec), actor)
        stack.keys[name] = {"id": row.id, "key": minted.key, "prefix": row.prefix, "subject": row.subject}

    await mint("reader", scopes=["read"], subject="customer-42")
    await mint("writer", scopes=["read", "write"])
    await mint("noscope")
    await mint("files", scopes=["files:write"])
    await mint("files_near", scopes=["files:writer", "my-files:write", "files"])
    await mint("dot", scopes=["a.b"])
    await mint("not_dot", scopes=["axb"])
    await mint("es256", algorithm="ES256", scopes=["read"])
    await mint("eddsa", algorithm="EdDSA", scopes=["read"])
    for i in range(REVOCATIONS):
        await mint(f"revoke_me_{i}", scopes=["read"])
    await mint("roll_me", scopes=["read"])
    await mint("other_tenant", tenant="other", scopes=["read", "write"])
    await mint("solo_only", tenant="solo")
    await mint("shard_a", tenant="sharded")
    await mint("shard_b", tenant="sharded", scopes=["read", "write"], subject="customer-7")

    # Two keys published behind the service's back, to see Envoy check `exp`
    # itself: their rows claim no expiry, so the server keeps both JWKs in the
    # JWKS; one token's exp passed 10 minutes ago (beyond Envoy's 60 s skew).
    info = core.tenants.tenant("default").info
    now = int(time.time())
    for name, exp in (("raw_valid", now + 3600), ("raw_expired", now - 600)):
        m = keys.mint({"iss": info.issuer, "aud": info.audience, "iat": now - 700, "exp": exp},
                      prefix=info.key_prefix)
        async with core.sessions() as s, s.begin():
            s.add(ApiKey(
                id=m.kid, tenant_id="default", kind="api", name=name, subject=m.claims["sub"], scopes=[],
                prefix=info.key_prefix, last4=m.key[-4:], algorithm="RS256", public_jwk=m.public_jwk, meta={},
                rate_limits=None, created_at=now, expires_at=None, revoked_at=None, grace_ends_at=None,
                rolled_from=None, rolled_to=None, changed_at=now * 1000, shard=None, published_at=now,
            ))
        stack.keys[name] = {"id": m.kid, "key": m.key, "prefix": info.key_prefix}


@pytest.fixture(scope="module")
def stack(make_stack):
    return make_stack(_plan)


@pytest.fixture(scope="module")
def gw(stack):
    """The default tenant's Envoy, configured by the CLI exactly as documented."""
    args = ["--cache-duration", str(CACHE_SECONDS)]
    for rule in SCOPE_RULES:
        args += ["--require-scope", rule]
    config, listen, admin = stack.envoy_config_from_cli("default", *args)
    return stack.start_envoy(config, listen, admin, "default")


@pytest.fixture(autouse=True)
def _logs_on_failure(request, stack):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(dump_logs(stack))


# --- accepted ---------------------------------------------------------------


def test_minted_key_passes_and_upstream_sees_its_claims(stack, gw):
    k = stack.keys["reader"]
    hits = stack.echo.hits
    r = gw.get("/orders?limit=1", k["key"])
    assert r.status_code == 200, r.text
    body = as_json(r)
    assert body["path"] == "/orders?limit=1"
    assert body["api_key"] == {"id": k["id"], "subject": "customer-42", "scope": "read"}
    # forward: false: the upstream never sees the key
    assert "authorization" not in body["headers"]
    assert stack.echo.hits == hits + 1
    # keys of every algorithm the tenant may use
    for name in ("es256", "eddsa", "writer"):
        r = gw.get("/x", stack.keys[name]["key"])
        assert r.status_code == 200, (name, r.text)
        assert as_json(r)["api_key"]["id"] == stack.keys[name]["id"]


def test_client_cannot_spoof_the_claim_headers(stack, gw):
    k = stack.keys["noscope"]
    spoof = {"x-api-key-scope": "write admin", "x-api-key-subject": "someone-else", "x-api-key-id": "forged"}
    r = gw.get("/hello", k["key"], spoof)
    assert r.status_code == 200, r.text
    seen = as_json(r)["api_key"]
    assert seen == {"id": k["id"], "subject": k["subject"], "scope": None}
    # and the spoofed scope opens no protected route
    r = gw.get("/write/x", k["key"], spoof)
    assert r.status_code == 403
    # without a key the spoofed headers get nothing through
    assert gw.get("/hello", None, spoof).status_code == 401


# --- refused ------------------------------------------------------------------


def _forged(key: str) -> str:
    """Same header (kid) and claims, signed by a keypair that is not the key's."""
    header, payload, _ = _parts(key)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return "sk_live_" + pyjwt.encode(payload, other, algorithm="RS256", headers={"kid": header["kid"], "typ": "JWT"})


def _tampered(key: str) -> str:
    header, payload, sig = _parts(key)
    payload["scope"] = "read write admin"
    return f"sk_live_{_b64(header)}.{_b64(payload)}.{sig}"


def _alg_none(key: str) -> str:
    header, payload, _ = _parts(key)
    return f"sk_live_{_b64({'alg': 'none', 'kid': header['kid'], 'typ': 'JWT'})}.{_b64(payload)}."


REFUSED = {
    # name: function(stack) -> request headers
    "no key": lambda s: {},
    "bare bearer": lambda s: {"Authorization": "Bearer"},
    "prefix only": lambda s: {"Authorization": "Bearer sk_live_"},
    "garbage": lambda s: {"Authorization": "Bearer sk_live_garbage"},
    "three dots": lambda s: {"Authorization": "Bearer sk_live_a.b.c"},
    "truncated signature": lambda s: {"Authorization": "Bearer " + s.keys["reader"]["key"][:-10]},
    "basic auth": lambda s: {"Authorization": "Basic dXNlcjpwYXNz"},
    "JWT without our prefix": lambda s: {"Authorization": "Bearer " + s.keys["reader"]["key"][len("sk_live_"):]},
    "another environment's prefix": lambda s: {
        "Authorization": "Bearer sk_test_" + s.keys["reader"]["key"][len("sk_live_"):]},
    "key in another header": lambda s: {"X-Api-Key": s.keys["reader"]["key"]},
    "forged: other keypair, same kid": lambda s: {"Authorization": "Bearer " + _forged(s.keys["reader"]["key"])},
    "tampered claims": lambda s: {"Authorization": "Bearer " + _tampered(s.keys["reader"]["key"])},
    "alg none": lambda s: {"Authorization": "Bearer " + _alg_none(s.keys["reader"]["key"])},
    "expired (kid still published)": lambda s: {"Authorization": "Bearer " + s.keys["raw_expired"]["key"]},
    "another tenant's key": lambda s: {"Authorization": "Bearer " + s.keys["other_tenant"]["key"]},
    "a sharded tenant's key": lambda s: {"Authorization": "Bearer " + s.keys["shard_a"]["key"]},
    "admin key": lambda s: {"Authorization": "Bearer " + s.admin["default"]},
    "admin JWT behind the API prefix": lambda s: {
        "Authorization": "Bearer sk_live_" + s.admin["default"][len("sk_admin_"):]},
}


# Envoy answers a token whose signature it never got to check because the
# audience is not the tenant's (the admin audience) with 403, not 401.
AUDIENCE_403 = {"admin JWT behind the API prefix"}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_and_upstream_untouched(stack, gw, case):
    headers = REFUSED[case](stack)
    hits = stack.echo.hits
    r = gw.get("/hello", None, headers)
    expected = (403, "forbidden") if case in AUDIENCE_403 else (401, "unauthorized")
    assert r.status_code == expected[0], (case, r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert as_json(r)["code"] == expected[1]  # never which part was wrong
    assert stack.echo.hits == hits


def test_expiry_is_checked_by_envoy_itself(stack, gw):
    """Both raw keys' JWKs are published; only the one whose exp passed is refused."""
    kids = stack.jwks_kids()
    assert stack.keys["raw_valid"]["id"] in kids and stack.keys["raw_expired"]["id"] in kids
    assert gw.status(stack.keys["raw_valid"]["key"]) == 200
    assert gw.status(stack.keys["raw_expired"]["key"]) == 401


def test_query_parameter_is_not_a_credential(stack, gw):
    key = stack.keys["reader"]["key"]
    assert gw.get(f"/hello?access_token={key}").status_code == 401
    assert gw.get(f"/hello?access_token={key[len('sk_live_'):]}").status_code == 401


# --- scopes -------------------------------------------------------------------


@pytest.mark.parametrize("key_name,path,status", [
    ("reader", "/write", 403),
    ("reader", "/write/deep/x?y=1", 403),
    ("reader", "/%77rite/x", 403),  # percent-encoded unreserved characters are decoded first
    ("reader", "//write/x", 403),  # slashes merged
    ("reader", "/a/../write/x", 403),  # dot segments resolved
    ("noscope", "/write", 403),
    ("other_tenant", "/write", 401),  # authentication comes first
    ("writer", "/write/x", 200),
    ("reader", "/read/x", 200),
    ("files", "/files/1", 200),
    ("files_near", "/files/1", 403),  # files:writer, my-files:write, files: none is files:write
    ("writer", "/files/1", 403),
    ("dot", "/dot", 200),
    ("not_dot", "/dot", 403),  # the '.' in a.b is literal
])
def test_scope_rules(stack, gw, key_name, path, status):
    # the raw request target, as a client could send it (httpx would normalise it)
    r = gw.http.request("GET", gw.url + "/", headers={"Authorization": f"Bearer {stack.keys[key_name]['key']}"},
                        extensions={"target": path.encode()})
    assert r.status_code == status, (key_name, path, r.text)
    if status == 403:
        assert as_json(r)["code"] == "forbidden"
    if status == 200:
        assert as_json(r)["path"] == path


# --- time: revocation, new keys, rolling, expiry ----------------------------------


def test_revoked_key_refused_within_cache_duration(stack, gw):
    before = gw.stats()
    times = []
    for i in range(REVOCATIONS):
        k = stack.keys[f"revoke_me_{i}"]
        for _ in range(200):  # used many times first: no JWT cache may keep it alive
            assert gw.status(k["key"]) == 200
        stack.revoke(k["id"])
        t0 = time.monotonic()
        assert k["id"] not in stack.jwks_kids()  # gone from the JWKS at once
        gw.wait_status(k["key"], 401, timeout=CACHE_SECONDS + SLACK + 5, interval=0.02)
        times.append(time.monotonic() - t0)  # from the revoke answer to the first 401
        assert all(gw.status(k["key"]) == 401 for _ in range(20))  # and it stays refused
        time.sleep(0.3 * i)  # revoke at different points of the refresh cycle
    print(f"\nrevocation propagation through Envoy (cache_duration {CACHE_SECONDS} s): "
          + ", ".join(f"{t:.2f} s" for t in times) + f"; max {max(times):.2f} s")
    assert max(times) <= CACHE_SECONDS + SLACK, times
    assert gw.stats().get("jwks_fetch_failed", 0) == before.get("jwks_fetch_failed", 0)
    assert gw.status(stack.keys["reader"]["key"]) == 200  # the others are unaffected


def test_new_key_accepted_once_the_gateway_refreshed(stack, gw):
    minted = stack.mint(name="fresh", scopes=["read"])
    assert minted["gateway_accepts_after"] - minted["published_at"] == CACHE_SECONDS
    took = gw.wait_status(minted["key"], 200, timeout=CACHE_SECONDS + SLACK + 5, interval=0.02)
    print(f"\nnew key accepted by Envoy after {took:.2f} s (cache_duration {CACHE_SECONDS} s)")
    assert took <= CACHE_SECONDS + SLACK
    assert as_json(gw.get("/hello", minted["key"]))["api_key"]["id"] == minted["id"]


def test_rolled_key_works_during_grace_and_the_new_one_too(stack, gw):
    old = stack.keys["roll_me"]
    assert gw.status(old["key"]) == 200
    rolled = stack.roll(old["id"], grace_seconds=120)
    assert rolled["previous"]["id"] == old["id"] and rolled["previous"]["state"] == "rolling"
    deadline = time.monotonic() + CACHE_SECONDS + SLACK
    new_ok = None
    while time.monotonic() < deadline:
        assert gw.status(old["key"]) == 200  # never interrupted
        if new_ok is None and gw.status(rolled["key"]) == 200:
            new_ok = time.monotonic()
        time.sleep(0.05)
    assert new_ok is not None, "the new key was not accepted within cache_duration + 2 s"
    assert gw.status(old["key"]) == 200 and gw.status(rolled["key"]) == 200
    # revoking the old key ends its grace at once
    stack.revoke(old["id"])
    gw.wait_status(old["key"], 401, timeout=CACHE_SECONDS + SLACK)
    assert gw.status(rolled["key"]) == 200


def test_key_stops_working_after_it_expires(stack, gw):
    minted = stack.mint(name="short", expires_in=5)
    gw.wait_status(minted["key"], 200, timeout=CACHE_SECONDS + SLACK)
    wait = minted["expires_at"] - time.time()
    took = gw.wait_status(minted["key"], 401, timeout=wait + CACHE_SECONDS + SLACK)
    assert took >= wait - 1.0  # not before its expiry...
    assert took <= wait + CACHE_SECONDS + SLACK  # ...and at most one refresh after it (it leaves the JWKS)


# --- other gateways ---------------------------------------------------------------


def test_unknown_kid_triggers_no_refetch(stack):
    """Envoy fetches once and waits its cache_duration: a newer key fails meanwhile."""
    config, listen, admin = stack.envoy_config("default", cache=600)
    gw = stack.start_envoy(config, listen, admin, "long-cache")
    try:
        assert gw.status(stack.keys["reader"]["key"]) == 200
        fetched = gw.stats()["jwks_fetch_success"]
        minted = stack.mint(name="too new")
        for _ in range(10):
            assert gw.status(minted["key"]) == 401
            time.sleep(0.1)
        assert gw.stats()["jwks_fetch_success"] == fetched == 1
    finally:
        stack.stop_envoy(gw)


def test_revoking_the_last_key_of_a_tenant_takes_effect(stack):
    """An empty JWKS would be a failed fetch (Envoy keeps the old set forever):
    the sentinel key keeps it non-empty, so the revocation goes through."""
    k = stack.keys["solo_only"]
    assert stack.jwks_kids("solo") == [k["id"]]
    config, listen, admin = stack.envoy_config("solo")
    gw = stack.start_envoy(config, listen, admin, "solo")
    try:
        assert gw.status(k["key"]) == 200
        stack.revoke(k["id"], tenant="solo")
        kids = stack.jwks_kids("solo")
        assert len(kids) == 1 and k["id"] not in kids  # just the sentinel: no private half anywhere
        took = gw.wait_status(k["key"], 401, timeout=CACHE_SECONDS + SLACK + 5)
        print(f"\nlast key of a tenant refused after {took:.2f} s")
        assert took <= CACHE_SECONDS + SLACK
        stats = gw.stats()
        assert stats.get("jwks_fetch_failed", 0) == 0 and stats["jwks_fetch_success"] >= 2
    finally:
        stack.stop_envoy(gw)


def test_sharded_tenant_routes_each_key_to_its_shard(stack):
    a, b = stack.keys["shard_a"], stack.keys["shard_b"]
    assert {a["prefix"], b["prefix"]} == {"sk_live_s0_", "sk_live_s1_"}
    config, listen, admin = stack.envoy_config("sharded")
    providers = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"][0]["typed_config"]["providers"]
    assert len(providers) == 3  # the main JWKS and two shards
    gw = stack.start_envoy(config, listen, admin, "sharded")
    try:
        spoof = {"x-api-key-scope": "write admin", "x-api-key-subject": "someone-else", "x-api-key-id": "forged"}
        for k, scope in ((a, None), (b, "read write")):
            r = gw.get("/hello", k["key"])
            assert r.status_code == 200, r.text
            assert as_json(r)["api_key"] == {"id": k["id"], "subject": k["subject"], "scope": scope}
            # sharded, the claims are forwarded from the payload metadata; client copies still go
            r = gw.get("/hello", k["key"], spoof)
            assert as_json(r)["api_key"] == {"id": k["id"], "subject": k["subject"], "scope": scope}
            assert "authorization" not in as_json(r)["headers"]
        assert gw.get("/hello", None, spoof).status_code == 401
        # a key presented under the other shard's prefix is checked against that shard: refused
        swapped = b["prefix"] + a["key"][len(a["prefix"]):]
        assert gw.status(swapped) == 401
        assert gw.status(stack.keys["reader"]["key"]) == 401  # the default tenant's key
        stack.revoke(a["id"], tenant="sharded")
        gw.wait_status(a["key"], 401, timeout=CACHE_SECONDS + SLACK + 5)
        assert gw.status(b["key"]) == 200
    finally:
        stack.stop_envoy(gw)
