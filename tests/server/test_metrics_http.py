"""/metrics (issue 16, items 8 and 12): not public, and what it counts.

Item 8: on the public listener /metrics is a 404 unless AUTHSERVER_METRICS_TOKEN
is set and presented; AUTHSERVER_METRICS_PORT serves it on its own listener.
Item 12: requests and latency by route template and status, JWKS fetches per
tenant and shard with their 304s, introspections by status, build info.
"""

from __future__ import annotations

import asyncio
import platform

import httpx
import pytest
from _env import METRICS_HEADERS, METRICS_TOKEN
from _server_helpers import is_problem, mint, sharded_tenant
from prometheus_client.parser import text_string_to_metric_families

from authserver import __version__
from authserver_devtools import free_port

JWKS = "/t/default/.well-known/jwks.json"
JWKS_ROUTE = "/t/{tenant_id}/.well-known/jwks.json"


@pytest.fixture
def database_url(tmp_path) -> str:
    """The metrics do not depend on the backend: SQLite only."""
    return f"sqlite+aiosqlite:///{tmp_path / 'authserver.db'}"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = await client.get("/metrics", headers=METRICS_HEADERS)
    assert r.status_code == 200, r.text
    return samples(r.text)


def value(scraped, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


# --- item 8: who may read them ---


@pytest.mark.parametrize("headers", [{}, METRICS_HEADERS, {"Authorization": "Bearer "}])
async def test_public_metrics_are_404_without_a_configured_token(tenant, client_factory, headers):
    client = await client_factory(metrics_token=None)
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == 404 and is_problem(r)
    assert "default" not in r.text and "authserver_" not in r.text


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-of-some-length", f"Basic {METRICS_TOKEN}",
                                           f"Bearer {METRICS_TOKEN}x", f"Bearer {METRICS_TOKEN[:-1]}"])
async def test_public_metrics_need_the_exact_token(client, authorization):
    r = await client.get("/metrics", headers={"Authorization": authorization} if authorization else {})
    assert r.status_code == 404 and is_problem(r)
    assert "authserver_keys_active" not in r.text


async def test_public_metrics_answer_with_the_token(client):
    r = await client.get("/metrics", headers={"Authorization": f"bearer  {METRICS_TOKEN} "})
    assert r.status_code == 200
    assert 'authserver_keys_active{tenant="default"}' in r.text
    assert r.headers["cache-control"] == "no-store"


def test_a_short_metrics_token_is_refused():
    from authserver.settings import Settings

    with pytest.raises(ValueError, match="AUTHSERVER_METRICS_TOKEN"):
        Settings.from_env({"AUTHSERVER_METRICS_TOKEN": "short"})
    assert Settings.from_env({"AUTHSERVER_METRICS_PORT": "9464"}).metrics_port == 9464
    assert Settings.from_env({}).metrics_port == 0  # off by default


async def test_metrics_listener_serves_them_off_the_public_port(tenant, client_factory):
    port = free_port()
    client = await client_factory(metrics_token=None, metrics_port=port)
    assert (await client.get("/metrics")).status_code == 404  # still not on the public listener

    def get(path: str, **kw) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5, **kw)

    r = await asyncio.to_thread(get, "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'authserver_keys_active{tenant="default"}' in r.text
    assert (await asyncio.to_thread(get, "/.well-known/jwks.json")).status_code == 404  # metrics only
    assert (await asyncio.to_thread(httpx.post, f"http://127.0.0.1:{port}/metrics")).status_code == 405


async def test_metrics_listener_checks_the_token_when_one_is_set(tenant, client_factory):
    port = free_port()
    client = await client_factory(metrics_port=port)
    url = f"http://127.0.0.1:{port}/metrics"
    r = await asyncio.to_thread(httpx.get, url)
    assert r.status_code == 401 and "authserver_" not in r.text
    r = await asyncio.to_thread(httpx.get, url, headers=METRICS_HEADERS)
    assert r.status_code == 200 and "authserver_keys_active" in r.text
    assert (await client.get("/metrics", headers=METRICS_HEADERS)).status_code == 200  # token: public too


async def test_metrics_listener_drops_a_client_that_never_finishes_its_request(tenant, client_factory):
    port = free_port()
    await client_factory(metrics_token=None, metrics_port=port)
    # many silent clients do not keep a scraper out
    silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
    r = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200
    for _, w in silent:
        w.close()


# --- item 12: what they count ---


async def test_requests_are_counted_by_route_template_and_status(client, admin_headers):
    before = await scrape(client)
    for _ in range(3):
        assert (await client.get(JWKS)).status_code == 200
    assert (await client.get("/t/nosuch/.well-known/jwks.json")).status_code == 404
    for n in range(5):  # a scanner: raw paths never become labels
        assert (await client.get(f"/wp-admin/probe-{n}.php")).status_code == 404
    assert (await client.request("BREW", JWKS)).status_code in (400, 405)
    await mint(client, admin_headers)
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("authserver_http_requests_total", route=JWKS_ROUTE, method="GET", status="200") == 3
    assert moved("authserver_http_requests_total", route=JWKS_ROUTE, method="GET", status="404") == 1
    assert moved("authserver_http_requests_total", route="unmatched", method="GET", status="404") == 5
    assert moved("authserver_http_requests_total", route="/v1/keys", method="POST", status="201") == 1
    assert moved("authserver_http_request_duration_seconds_count", route=JWKS_ROUTE, method="GET") == 4
    assert moved("authserver_http_request_duration_seconds_sum", route=JWKS_ROUTE, method="GET") > 0
    brewed = [labels for (name, labels) in after if name == "authserver_http_requests_total"
              and ("method", "other") in labels]
    assert brewed, "an unknown method is counted under method=other"
    text = (await client.get("/metrics", headers=METRICS_HEADERS)).text
    assert "wp-admin" not in text and "nosuch" not in text and "BREW" not in text


async def test_jwks_fetches_per_tenant_and_shard_with_304s(make_settings, client_factory):
    await sharded_tenant(make_settings(), 2)
    client = await client_factory()
    before = await scrape(client)
    etag = (await client.get(JWKS)).headers["etag"]
    for _ in range(3):
        assert (await client.get(JWKS, headers={"If-None-Match": etag})).status_code == 304
    shard1 = "/t/default/shards/1/jwks.json"
    etag1 = (await client.get(shard1)).headers["etag"]
    assert (await client.get(shard1, headers={"If-None-Match": etag1})).status_code == 304
    assert (await client.get("/.well-known/jwks.json")).status_code == 200  # the default tenant
    assert (await client.get("/t/default/shards/9/jwks.json")).status_code == 404
    after = await scrape(client)

    def moved(**labels: str) -> float:
        name = "authserver_jwks_fetches_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(tenant="default", shard="main", result="full") == 2
    assert moved(tenant="default", shard="main", result="not_modified") == 3
    assert moved(tenant="default", shard="1", result="full") == 1
    assert moved(tenant="default", shard="1", result="not_modified") == 1
    assert not [labels for (name, labels) in after if name == "authserver_jwks_fetches_total"
                and ("shard", "9") in labels]


async def test_introspections_by_status_and_build_info(client, admin_headers):
    key = (await mint(client, admin_headers))["key"]
    before = await scrape(client)
    for token in (key, key, "not-a-token"):
        r = await client.post("/oauth/introspect", data={"token": token}, headers=admin_headers)
        assert r.status_code == 200, r.text
    after = await scrape(client)
    name = "authserver_introspections_total"
    assert value(after, name, status="VALID") - value(before, name, status="VALID") == 2
    assert value(after, name, status="INVALID") - value(before, name, status="INVALID") == 1
    assert value(after, "authserver_build_info", version=__version__, python=platform.python_version()) == 1
