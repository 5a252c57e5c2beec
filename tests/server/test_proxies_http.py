"""Client addresses behind trusted proxies, and a failure budget that never
refuses a credential that verifies (issue 16 item 2)."""

from __future__ import annotations

import html
import re

from _server_helpers import is_problem, mint

LB = "10.0.0.5"
BAD = {"Authorization": "Bearer nope"}


class PeerApp:
    """The app as if every connection came from ``peer`` (the test client's is 'testclient')."""

    def __init__(self, app, peer: str) -> None:
        self.app, self.peer = app, peer

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "client": (self.peer, 40000)}
        await self.app(scope, receive, send)

    def __getattr__(self, name):
        return getattr(self.app, name)


async def _client_from(peer, make_settings, clock, **overrides):
    from litestar.testing import AsyncTestClient

    from authserver.app import create_app

    client = AsyncTestClient(app=PeerApp(create_app(make_settings(**overrides), clock=clock), peer),
                             base_url="http://testserver.local")
    await client.__aenter__()
    return client


async def _audit_addrs(client, headers):
    return [e["remote_addr"] for e in (await client.get("/v1/audit", headers=headers)).json()["data"]]


async def test_spoofed_forwarded_headers_from_an_untrusted_peer_are_ignored(tenant, make_settings, clock,
                                                                            admin_headers):
    client = await _client_from("203.0.113.9", make_settings, clock, trusted_proxies="10.0.0.0/8",
                                rate_limit_auth_failures_per_minute=3)
    try:
        codes = [(await client.get("/v1/keys", headers={**BAD, "X-Forwarded-For": f"198.51.100.{i}",
                                                         "Forwarded": f"for=192.0.2.{i}"})).status_code
                 for i in range(5)]
        assert codes == [401, 401, 401, 429, 429]  # one budget: the peer's
        await mint(client, {**admin_headers, "X-Forwarded-For": "198.51.100.1"}, algorithm="EdDSA")
        assert "203.0.113.9" in await _audit_addrs(client, admin_headers)
    finally:
        await client.__aexit__(None, None, None)


async def test_behind_a_trusted_proxy_failures_count_per_real_client(tenant, make_settings, clock, admin_headers):
    client = await _client_from(LB, make_settings, clock, trusted_proxies="10.0.0.0/8, fd00::/8",
                                rate_limit_auth_failures_per_minute=3)
    try:
        attacker = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}  # 6.6.6.6 is the attacker's own invention
        codes = [(await client.get("/v1/keys", headers={**BAD, **attacker})).status_code for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        # another client behind the same proxy is not locked out, whichever header the proxy sends
        for other in ({"X-Forwarded-For": "198.51.100.8"}, {"Forwarded": 'for="[2001:db8::8]:1234"'},
                      {"Forwarded": "for=192.0.2.8;proto=https, for=10.1.1.1"}):
            is_problem(await client.get("/v1/keys", headers={**BAD, **other}), 401)
        # garbage headers never 500; they fall back to the proxy's own address (one budget)
        codes = [(await client.get("/v1/keys", headers={**BAD, **junk})).status_code
                 for junk in ({"X-Forwarded-For": "\x7f, ,,["}, {"Forwarded": 'for="unclosed'},
                              {"Forwarded": ";;=,"}, {"X-Forwarded-For": "1.1.1.1," * 3000})]
        assert codes == [401, 401, 401, 429]
        await mint(client, {**admin_headers, "Forwarded": 'for="[2001:DB8::9]"'}, algorithm="EdDSA")
        assert "2001:db8::9" in await _audit_addrs(client, admin_headers)
    finally:
        await client.__aexit__(None, None, None)


async def test_a_valid_admin_key_works_from_an_address_over_its_failure_budget(tenant, client_factory,
                                                                             admin_headers):
    client = await client_factory(rate_limit_auth_failures_per_minute=2)
    for _ in range(3):
        await client.get("/v1/keys", headers=BAD)
    is_problem(await client.get("/v1/keys", headers=BAD), 429)
    # the API, introspection and the portal sign-in all still take the good key
    assert (await client.get("/v1/keys", headers=admin_headers)).status_code == 200
    body = await mint(client, admin_headers, algorithm="EdDSA")
    r = await client.post("/oauth/introspect", data={"token": body["key"]}, headers=admin_headers)
    assert r.status_code == 200 and r.json()["active"] is True
    is_problem(await client.post("/oauth/introspect", data={"token": body["key"]}, headers=BAD), 429)
    page = (await client.get("/portal/login")).text
    csrf = html.unescape(re.search(r'name="csrf_token" value="([^"]+)"', page).group(1))
    r = await client.post("/portal/login", data={"csrf_token": csrf, "admin_key": "sk_admin_x"})
    assert r.status_code == 429
    r = await client.post("/portal/login", data={"csrf_token": csrf, "admin_key": tenant[1]},
                          follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/portal/keys"
