"""The portal's webhooks page over HTTP: endpoints, recent deliveries, replay,
add (secret shown once) and remove; with the sender running in the app."""

from __future__ import annotations

import asyncio
import re

import pytest
from _webhooks import Receiver, verified
from portal_helpers import Portal, secret_of

import keys.webhooks as wh


@pytest.fixture
def rx():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
async def hook_portal(client_factory, tenant):
    client = await client_factory(webhook_key=wh.new_box_key(), webhook_allow_http_loopback=True,
                                  webhook_poll_seconds=0.05)
    p = Portal(client)
    await p.login(tenant[1])
    return p


async def _until(predicate, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_add_see_deliveries_replay_remove(hook_portal, admin_headers, rx):
    portal = hook_portal
    page = (await portal.get("/portal/webhooks")).text
    assert 'href="/portal/webhooks" aria-current="page"' in page and "No endpoints yet" in page
    r = await portal.post("/portal/webhooks", {"url": rx.url, "description": "crm",
                                               "event_types": ["key.created", "key.revoked"]}, expect=201)
    assert r.headers["cache-control"].startswith("no-store")
    secret = secret_of(r.text)
    assert secret.startswith("whsec_")
    listed = (await portal.get("/portal/webhooks")).text
    assert rx.url in listed and "crm" in listed and secret not in listed
    [endpoint_id] = re.findall(r'data-endpoint-id="([^"]+)"', listed)

    await portal.client.post("/v1/keys", headers=admin_headers, json={"name": "k"})

    async def delivered() -> bool:
        return "badge-delivered" in (await portal.get("/portal/webhooks")).text

    await _until(delivered)
    page = (await portal.get("/portal/webhooks")).text
    [delivery_id] = re.findall(r'data-delivery-id="([^"]+)"', page)
    assert "key.created" in page and "HTTP 204" in page and rx.requests[0].headers["webhook-id"] in page
    r = await portal.post(f"/portal/webhooks/deliveries/{delivery_id}/replay", expect=303)
    assert r.headers["location"] == "/portal/webhooks"
    async def sent_again() -> bool:
        return len(rx.requests) == 2

    await _until(sent_again)
    assert rx.requests[1].headers["webhook-id"] == rx.requests[0].headers["webhook-id"]
    assert verified(secret, rx.requests[1])["type"] == "key.created"
    assert "queued again" in (await portal.get("/portal/webhooks")).text

    # no CSRF token: refused, nothing replayed or removed
    await portal.post(f"/portal/webhooks/deliveries/{delivery_id}/replay", {"csrf_token": "x"}, expect=403)
    await portal.post(f"/portal/webhooks/{endpoint_id}/remove", {"csrf_token": "x"}, expect=403)
    await portal.post(f"/portal/webhooks/{endpoint_id}/remove", expect=303)
    assert "No endpoints yet" in (await portal.get("/portal/webhooks")).text
    await portal.post(f"/portal/webhooks/{endpoint_id}/remove", expect=404)


async def test_bad_url_and_no_types_stay_on_the_page(hook_portal):
    r = await hook_portal.post("/portal/webhooks", {"url": "http://hooks.example.com/h",
                                                    "event_types": ["key.created"]}, expect=422)
    assert "https" in r.text and "http://hooks.example.com/h" in r.text  # the form keeps what was typed
    r = await hook_portal.post("/portal/webhooks", {"url": "https://hooks.example.com/h"}, expect=422)
    assert "at least one event type" in r.text
    await hook_portal.post("/portal/webhooks/deliveries/dlv_00/replay", expect=404)


async def test_without_a_webhook_key_the_page_says_so(client, tenant):
    portal = Portal(client)
    await portal.login(tenant[1])
    page = (await portal.get("/portal/webhooks")).text
    assert "AUTHSERVER_WEBHOOK_KEY" in page and "Add an endpoint" not in page
    r = await portal.post("/portal/webhooks", {"url": "https://hooks.example.com/h", "event_types": ["key.created"]},
                          expect=503)
    assert "AUTHSERVER_WEBHOOK_KEY" in r.text
