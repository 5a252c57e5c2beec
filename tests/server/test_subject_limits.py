"""Rate limits shared by every API key of one subject: the HTTP API (tenant
scoped, problem+json, audited), the CLI, and the rate-limit service's
decisions (the key's and the subject's windows together; a route's cost
against windows and credits). SQLite and PostgreSQL. (Through a real Envoy:
tests/envoy/test_ratelimit_costs.py.)"""

from __future__ import annotations

import json
from urllib.parse import quote, unquote

import pytest
from _server_helpers import is_problem

from authserver.offline import open_core
from authserver.schemas import Credits, KeyPatch, key_spec
from authserver.services import Actor, Introspector

LIMITS = [{"limit": 100, "window_seconds": 60}, {"limit": 1000, "window_seconds": 3600}]


async def test_put_get_delete_and_the_audit_trail(client, admin_headers):
    url = "/v1/subjects/customer-42/limits"
    r = await client.get(url, headers=admin_headers)
    assert is_problem(r, 404)["code"] == "not_found"
    r = await client.put(url, json={"rate_limits": LIMITS}, headers=admin_headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["subject"] == "customer-42" and body["rate_limits"] == LIMITS and body["updated_at"] > 0
    assert (await client.get(url, headers=admin_headers)).json()["rate_limits"] == LIMITS
    one = [{"limit": 5, "window_seconds": 1}]
    assert (await client.put(url, json={"rate_limits": one}, headers=admin_headers)).json()["rate_limits"] == one
    r = await client.delete(url, headers=admin_headers)
    assert r.status_code == 200 and r.json()["rate_limits"] == []
    assert is_problem(await client.get(url, headers=admin_headers), 404)
    assert is_problem(await client.delete(url, headers=admin_headers), 404)  # nothing left to remove
    events = (await client.get("/v1/audit", headers=admin_headers)).json()["data"]
    subject_events = [(e["action"], e["details"]) for e in events if e["action"].startswith("subject.")]
    assert subject_events == [
        ("subject.clear_limits", {"subject": "customer-42", "rate_limits": None}),
        ("subject.set_limits", {"subject": "customer-42", "rate_limits": one}),
        ("subject.set_limits", {"subject": "customer-42", "rate_limits": LIMITS}),
    ]


async def test_bad_requests_are_problems_and_nothing_changes(client, admin_headers):
    url = "/v1/subjects/s1/limits"
    for body in ({"rate_limits": []}, {"rate_limits": [{"limit": 0, "window_seconds": 1}]},
                 {"rate_limits": [{"limit": "5", "window_seconds": 1}]}, {"rate_limits": LIMITS, "x": 1}, {},
                 {"rate_limits": [{"limit": 1, "window_seconds": 1}] * 9}):
        r = await client.put(url, json=body, headers=admin_headers)
        assert 400 <= is_problem(r)["status"] < 500 and r.status_code in (400, 422), (body, r.text)
    r = await client.put(url, content=b"rate_limits=1", headers=admin_headers | {"content-type": "text/plain"})
    assert is_problem(r, 415)
    assert is_problem(await client.put(url, json={"rate_limits": LIMITS}), 401)
    assert is_problem(await client.put("/v1/subjects/" + "x" * 257 + "/limits", json={"rate_limits": LIMITS},
                                       headers=admin_headers))["status"] in (400, 404, 422)
    assert is_problem(await client.get(url, headers=admin_headers), 404)


@pytest.mark.parametrize("subject", ["org/team", "/leading", "trailing/", "a//b", "x/limits", "100%", "ü/ß",
                                     "a%2Fb"])
async def test_any_subject_is_addressable_percent_encoded(client, admin_headers, tenant, subject):
    """A subject is one percent-encoded path segment: "/" as %2F reaches its own
    limits, even where routing splits the decoded path on "/"."""
    url = "/v1/subjects/" + quote(subject, safe="") + "/limits"
    assert is_problem(await client.get(url, headers=admin_headers), 404)
    r = await client.put(url, json={"rate_limits": LIMITS}, headers=admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["subject"] == subject
    assert (await client.get(url, headers=admin_headers)).json() == r.json()
    assert client.app.state.core.cache.get(tenant[0]).subject_limits[subject] == ((100, 60), (1000, 3600))
    # no other subject got them: not the part before a "/", nor the decoded-again form
    for other in {subject.split("/")[0] or "x", unquote(subject)} - {subject}:
        assert is_problem(await client.get("/v1/subjects/" + quote(other, safe="") + "/limits",
                                           headers=admin_headers), 404)
    assert (await client.delete(url, headers=admin_headers)).json()["rate_limits"] == []
    assert is_problem(await client.get(url, headers=admin_headers), 404)


async def test_a_subject_path_that_names_no_subject_is_a_problem(client, admin_headers):
    await client.put("/v1/subjects/a%2Fb/limits", json={"rate_limits": LIMITS}, headers=admin_headers)
    # an unencoded "/" still ends at "/limits": the same subject
    assert (await client.get("/v1/subjects/a/b/limits", headers=admin_headers)).json()["subject"] == "a/b"
    for path, status in (("/v1/subjects/a%2Fb%2Flimits", 404), ("/v1/subjects/%2Flimits", 404),
                         ("/v1/subjects/a%2Fb", 404), ("/v1/subjects/%FF/limits", 400),
                         ("/v1/subjects/%0A/limits", 400), ("/v1/subjects/" + "%2F" * 257 + "/limits", 400)):
        assert is_problem(await client.get(path, headers=admin_headers), status), path


async def test_limits_are_tenant_scoped(tenant, client_factory, admin_headers, make_settings):
    async with open_core(make_settings()) as core:  # before the server starts: it loads both tenants
        _, other = await core.tenants.create_tenant("other", algorithm="EdDSA", actor=Actor("t"))
    client = await client_factory()
    theirs = {"Authorization": f"Bearer {other.key}"}
    url = "/v1/subjects/shared-name/limits"
    assert (await client.put(url, json={"rate_limits": LIMITS}, headers=admin_headers)).status_code == 200
    assert is_problem(await client.get(url, headers=theirs), 404)  # same subject name, another tenant
    assert is_problem(await client.delete(url, headers=theirs), 404)
    assert (await client.get(url, headers=admin_headers)).json()["rate_limits"] == LIMITS


async def test_a_read_only_admin_key_cannot_set_limits(client, admin_headers):
    r = await client.post("/v1/admin-keys", json={"name": "ro", "scopes": ["keys:read"]}, headers=admin_headers)
    assert r.status_code == 201, r.text
    ro = {"Authorization": f"Bearer {r.json()['key']}"}
    url = "/v1/subjects/s2/limits"
    assert is_problem(await client.put(url, json={"rate_limits": LIMITS}, headers=ro), 403)
    assert is_problem(await client.get(url, headers=ro), 404)  # reading is allowed; there is nothing


# --- the rate-limit service's decisions (what Envoy asks; the Envoy tests send the same) ---

class CountingLimiter:
    """The in-process limiter, counting the calls that would be Redis round trips."""

    def __init__(self, clock) -> None:
        from authserver.ratelimit import MemoryLimiter

        self.inner = MemoryLimiter(clock)
        self.calls = 0

    def decide_now(self, windows, cost=1):
        return None  # every decision is a round trip here

    async def hit_many(self, windows, cost=1, local=True):
        self.calls += 1
        return await self.inner.hit_many(windows, cost)

    async def undo(self, windows, cost=1):
        self.calls += 1
        await self.inner.undo(windows, cost)


def _request(tenant: str, kid: str, cost: int | None = None):
    from envoy.service.ratelimit.v3 import rls_pb2

    req = rls_pb2.RateLimitRequest(domain="authserver")
    d = req.descriptors.add()
    for k, v in (("tenant", tenant), ("key_id", kid)):
        e = d.entries.add()
        e.key, e.value = k, v
    if cost is not None:
        d.hits_addend.value = cost
    return req


def _code(resp) -> str:
    from envoy.service.ratelimit.v3 import rls_pb2

    if resp.overall_code == rls_pb2.RateLimitResponse.OK:
        return "ok"
    import json

    return json.loads(resp.raw_body)["code"]


@pytest.fixture
async def rls_core(make_settings):
    async with open_core(make_settings()) as core:
        await core.tenants.create_tenant("acme", algorithm="EdDSA", actor=Actor("t"))
        yield core


def _server(core, limiter):
    from prometheus_client import CollectorRegistry

    from authserver.gateways.ratelimit import RateLimitMetrics, RateLimitServer
    from authserver.services.credits import Credits

    return RateLimitServer(core.cache, limiter, RateLimitMetrics(CollectorRegistry(), False),
                           Credits(core.sessions, core.clock))


async def test_two_keys_of_a_subject_share_its_budget_and_free_keys_cost_no_round_trip(rls_core):
    core = rls_core
    a, _ = await core.lifecycle.mint("acme", key_spec({"subject": "cust", "rate_limits": [
        {"limit": 10, "window_seconds": 60}]}), Actor("t"))
    b, b_minted = await core.lifecycle.mint("acme", key_spec({"subject": "cust"}), Actor("t"))
    free, free_minted = await core.lifecycle.mint("acme", key_spec({"subject": "someone-else"}), Actor("t"))
    b_key, free_key = b_minted.key, free_minted.key
    limiter = CountingLimiter(core.clock)
    rls = _server(core, limiter)
    assert _code(await rls.ShouldRateLimit(_request("acme", b.id), None)) == "ok"
    assert limiter.calls == 0  # neither b nor its subject has limits: no round trip
    await core.subjects.set("acme", "cust", key_spec({"rate_limits": [{"limit": 3, "window_seconds": 60}]})
                            .rate_limits or [], Actor("t"))
    got = [_code(await rls.ShouldRateLimit(_request("acme", kid), None)) for kid in (a.id, b.id, a.id, b.id)]
    assert got == ["ok", "ok", "ok", "rate_limited"]  # 3 per minute between them
    # introspection sees the spent shared window (the same limiter: the gateway's counts)
    intro = Introspector(core.sessions, core.cache, core.clock, limiter.inner)
    answer = await intro.introspect("acme", b_key)
    assert answer["status"] == "RATE_LIMITED" and answer["subject_rate_limit_state"] == [
        {"limit": 3, "window_seconds": 60, "remaining": 0, "reset_after": answer["subject_rate_limit_state"][0]
         ["reset_after"]}]
    assert "subject_rate_limit_state" not in await intro.introspect("acme", free_key)
    assert _code(await rls.ShouldRateLimit(_request("acme", free.id), None)) == "ok"
    calls = limiter.calls
    assert _code(await rls.ShouldRateLimit(_request("acme", free.id), None)) == "ok" and limiter.calls == calls
    await core.subjects.clear("acme", "cust", Actor("t"))
    assert _code(await rls.ShouldRateLimit(_request("acme", b.id), None)) == "ok"  # b is free again
    assert limiter.calls == calls


async def test_a_call_costing_n_spends_n_credits_or_none(rls_core):
    core = rls_core
    row, _ = await core.lifecycle.mint("acme", key_spec({"credits": {"remaining": 12}, "rate_limits": [
        {"limit": 100, "window_seconds": 60}]}), Actor("t"))
    rls = _server(core, CountingLimiter(core.clock))

    def credits(resp) -> str | None:
        return next((h.value for h in resp.response_headers_to_add if h.key == "x-credits-remaining"), None)

    r = await rls.ShouldRateLimit(_request("acme", row.id, cost=5), None)
    assert _code(r) == "ok" and credits(r) == "7"
    r = await rls.ShouldRateLimit(_request("acme", row.id, cost=5), None)
    assert _code(r) == "ok" and credits(r) == "2"
    r = await rls.ShouldRateLimit(_request("acme", row.id, cost=5), None)
    assert _code(r) == "usage_exceeded"  # 2 left: refused, nothing spent
    r = await rls.ShouldRateLimit(_request("acme", row.id), None)
    assert _code(r) == "ok" and credits(r) == "1"
    # the window counted the costs of the calls let through (5 + 5 + 1), not the refused one
    r = await rls.ShouldRateLimit(_request("acme", row.id, cost=90), None)
    assert _code(r) == "rate_limited"  # 11 + 90 > 100
    await core.lifecycle.update("acme", row.id, KeyPatch(credits=Credits(remaining=1000)), Actor("t"))
    r = await rls.ShouldRateLimit(_request("acme", row.id, cost=89), None)
    assert _code(r) == "ok" and credits(r) == "911"  # exactly 100 in the window
    assert _code(await rls.ShouldRateLimit(_request("acme", row.id), None)) == "rate_limited"


async def test_a_change_reaches_another_replica_through_its_notice(make_settings):
    """The notice the PATCH of a key uses, for a subject: the other replica rereads the row."""
    async with open_core(make_settings()) as a, open_core(make_settings()) as b:
        await a.tenants.create_tenant("acme", algorithm="EdDSA", actor=Actor("t"))
        await b.sync.load()
        limits = key_spec({"rate_limits": [{"limit": 7, "window_seconds": 10}]}).rate_limits or []
        await a.subjects.set("acme", "cust", limits, Actor("t"))
        assert b.cache.get("acme").subject_limits == {}
        await b.sync.refresh_subject("acme", "cust")  # what its Invalidation calls on the notice
        assert b.cache.get("acme").subject_limits == {"cust": ((7, 10),)}
        await a.subjects.clear("acme", "cust", Actor("t"))
        assert await b.sync.reconcile(0) >= 1  # the reconcile loop finds a clearing too
        assert b.cache.get("acme").subject_limits == {}


def test_the_cli_sets_shows_and_clears(tmp_path, monkeypatch, capsys):
    from authserver.cli import main

    monkeypatch.setenv("AUTHSERVER_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("AUTHSERVER_LOG_JSON", "false")

    def cli(*args: str) -> tuple[int, str]:
        code = main(list(args))
        out = capsys.readouterr()
        assert "Traceback" not in out.err
        return code, out.out

    assert cli("tenant", "create", "acme", "--json")[0] == 0
    code, out = cli("subjects", "limits", "cust-9", "--tenant", "acme", "--rate-limit", "100/m",
                    "--rate-limit", "1000/h", "--json")
    assert code == 0 and json.loads(out)["rate_limits"] == [{"limit": 100, "window_seconds": 60},
                                                           {"limit": 1000, "window_seconds": 3600}]
    assert cli("subjects", "limits", "cust-9", "--tenant", "acme") == (
        0, "subject cust-9: shared rate limits 100/60s, 1000/3600s\n")
    assert cli("subjects", "limits", "cust-9", "--tenant", "acme", "--clear") == (
        0, "subject cust-9: shared rate limits none\n")
    assert cli("subjects", "limits", "cust-9", "--tenant", "acme")[1].endswith("none\n")
    assert cli("subjects", "limits", "cust-9", "--tenant", "acme", "--rate-limit", "lots")[0] != 0
    # any subject, "/" included: the same one the HTTP API names as org%2Fteam
    assert cli("subjects", "limits", "org/team", "--tenant", "acme", "--rate-limit", "5/s") == (
        0, "subject org/team: shared rate limits 5/1s\n")
    assert cli("subjects", "limits", "org/team", "--tenant", "acme", "--json")[1].count('"org/team"') == 1
    assert cli("subjects", "limits", "org", "--tenant", "acme")[1].endswith("none\n")
    assert cli("subjects", "limits", "cust-9", "--tenant", "nope", "--rate-limit", "1/s")[0] != 0


def test_a_subject_with_a_slash_end_to_end_through_serve_and_the_cli(tmp_path):
    """On the wire (`authserver serve`: uvicorn decodes %2F in the path, keeps the
    raw path) and in the CLI, "org/team" is one subject."""
    import httpx
    from _proc import Server, cli

    env = {"AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'authserver.db'}", "AUTHSERVER_LOG_JSON": "false"}
    headers = {"Authorization": "Bearer " + cli(env, "tenant", "create", "default", "--json")["admin_key"]}
    server = Server(env, log_dir=tmp_path).start()
    try:
        url = f"{server.url}/v1/subjects/org%2Fteam/limits"
        r = httpx.put(url, json={"rate_limits": LIMITS}, headers=headers)
        assert r.status_code == 200 and r.json()["subject"] == "org/team", r.text
        assert cli(env, "subjects", "limits", "org/team", "--json")["rate_limits"] == LIMITS
        assert httpx.get(f"{server.url}/v1/subjects/org/limits", headers=headers).status_code == 404
        assert httpx.delete(url, headers=headers).json()["rate_limits"] == []
        assert cli(env, "subjects", "limits", "org/team", "--json")["rate_limits"] == []
    finally:
        server.kill()
