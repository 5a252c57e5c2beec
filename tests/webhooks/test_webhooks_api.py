"""/v1/webhooks over HTTP, with the sender running in the app as under `serve`."""

from __future__ import annotations

import asyncio

import pytest
from _env import METRICS_HEADERS
from _webhooks import verified

PROBLEM = "application/problem+json"


async def _until(predicate, timeout: float = 10.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
async def hook_client(client_factory, tenant, webhook_key):
    return await client_factory(webhook_key=webhook_key, webhook_allow_http_loopback=True, webhook_poll_seconds=0.05)


async def test_register_deliver_log_replay_remove(hook_client, admin_headers, receiver):
    rx = receiver()
    r = await hook_client.post("/v1/webhooks", headers=admin_headers,
                               json={"url": rx.url, "event_types": ["key.created", "key.revoked"],
                                     "description": "billing"})
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["secret"]
    assert secret.startswith("whsec_") and r.headers["cache-control"] == "no-store"
    ep = created["id"]
    listed = (await hook_client.get("/v1/webhooks", headers=admin_headers)).json()["data"]
    assert [e["id"] for e in listed] == [ep] and "secret" not in listed[0]
    assert "secret" not in (await hook_client.get(f"/v1/webhooks/{ep}", headers=admin_headers)).json()

    key = (await hook_client.post("/v1/keys", headers=admin_headers, json={"name": "n"})).json()
    await _until(lambda: len(rx.requests) == 1)
    payload = verified(secret, rx.requests[0])
    assert payload["type"] == "key.created" and payload["data"]["key"]["id"] == key["id"]
    assert key["key"].encode() not in rx.requests[0].body

    async def log():
        r = await hook_client.get(f"/v1/webhooks/{ep}/deliveries", headers=admin_headers)
        assert r.status_code == 200
        return r.json()["data"]

    for _ in range(100):
        if (entries := await log())[0]["status"] == "delivered":
            break
        await asyncio.sleep(0.05)
    [d] = entries
    assert (d["status"], d["attempts"], d["last_status_code"], d["event_type"]) == ("delivered", 1, 204, "key.created")
    assert d["webhook_id"] == rx.requests[0].headers["webhook-id"]

    r = await hook_client.post(f"/v1/webhooks/deliveries/{d['id']}/replay", headers=admin_headers)
    assert r.status_code == 201, r.text
    assert r.json()["webhook_id"] == d["webhook_id"] and r.json()["replay_of"] == d["id"]
    await _until(lambda: len(rx.requests) == 2)
    assert rx.requests[1].headers["webhook-id"] == rx.requests[0].headers["webhook-id"]
    assert verified(secret, rx.requests[1]) == payload
    all_log = (await hook_client.get("/v1/webhooks/deliveries", headers=admin_headers)).json()["data"]
    assert len(all_log) == 2
    for _ in range(100):
        metrics = (await hook_client.get("/metrics", headers=METRICS_HEADERS)).text
        if 'authserver_webhook_attempts_total{result="delivered"} 2.0' in metrics:
            break
        await asyncio.sleep(0.05)
    assert 'authserver_webhook_attempts_total{result="delivered"} 2.0' in metrics

    r = await hook_client.delete(f"/v1/webhooks/{ep}", headers=admin_headers)
    assert r.status_code == 200 and r.json()["deleted_at"] is not None
    assert (await hook_client.get(f"/v1/webhooks/{ep}", headers=admin_headers)).status_code == 404
    await hook_client.delete(f"/v1/keys/{key['id']}", headers=admin_headers)
    await asyncio.sleep(0.3)
    assert len(rx.requests) == 2  # removed: the revocation is not sent


async def test_settings(hook_client, admin_headers):
    assert (await hook_client.get("/v1/webhooks/settings", headers=admin_headers)).json() == {"expiring_days": 7}
    r = await hook_client.put("/v1/webhooks/settings", headers=admin_headers, json={"expiring_days": 14})
    assert r.status_code == 200 and r.json() == {"expiring_days": 14}
    assert (await hook_client.get("/v1/webhooks/settings", headers=admin_headers)).json() == {"expiring_days": 14}


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("post", "/v1/webhooks", {}, 400),  # no url
    ("post", "/v1/webhooks", {"url": "https://x.example/h", "extra": 1}, 400),
    ("post", "/v1/webhooks", {"url": 5}, 400),
    ("post", "/v1/webhooks", {"url": "http://hooks.example.com/h"}, 422),  # http off loopback
    ("post", "/v1/webhooks", {"url": "https://u:p@hooks.example.com/h"}, 422),
    ("post", "/v1/webhooks", {"url": "https://hooks.example.com/h", "event_types": ["key.nope"]}, 422),
    ("post", "/v1/webhooks", {"url": "https://hooks.example.com/h", "event_types": "key.created"}, 400),
    ("post", "/v1/webhooks", {"url": "x" * 3000}, 400),
    ("post", "/v1/webhooks", "not json", 400),
    ("put", "/v1/webhooks/settings", {"expiring_days": 0}, 400),
    ("put", "/v1/webhooks/settings", {"expiring_days": "7"}, 400),
    ("get", "/v1/webhooks/ep_0123abcd", None, 404),
    ("get", "/v1/webhooks/nope%00", None, 400),
    ("delete", "/v1/webhooks/ep_0123abcd", None, 404),
    ("get", "/v1/webhooks/ep_0123abcd/deliveries", None, 404),
    ("get", "/v1/webhooks/deliveries?limit=0", None, 400),
    ("post", "/v1/webhooks/deliveries/dlv_0123/replay", None, 404),
    ("post", "/v1/webhooks/deliveries/ep_'or 1=1/replay", None, 400),
])
async def test_bad_input_is_problem_json(hook_client, admin_headers, method, path, body, status):
    kwargs: dict = {"headers": admin_headers}
    if isinstance(body, str):
        kwargs = {"headers": admin_headers | {"content-type": "application/json"}, "content": body}
    elif body is not None:
        kwargs["json"] = body
    r = await getattr(hook_client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["status"] == status


async def test_text_plain_and_scopes(hook_client, admin_headers):
    r = await hook_client.post("/v1/webhooks", headers=admin_headers | {"content-type": "text/plain"},
                               content=b'{"url": "https://hooks.example.com/h"}')
    assert r.status_code == 415 and r.headers["content-type"].startswith(PROBLEM)
    reader = (await hook_client.post("/v1/admin-keys", headers=admin_headers,
                                     json={"name": "ro", "scopes": ["keys:read"]})).json()["key"]
    ro = {"Authorization": f"Bearer {reader}"}
    r = await hook_client.post("/v1/webhooks", headers=ro, json={"url": "https://hooks.example.com/h"})
    assert r.status_code == 403 and r.headers["content-type"].startswith(PROBLEM)
    assert (await hook_client.get("/v1/webhooks", headers=ro)).status_code == 200
    assert (await hook_client.get("/v1/webhooks")).status_code == 401


async def test_without_a_webhook_key_registration_is_refused(client, admin_headers):
    r = await client.post("/v1/webhooks", headers=admin_headers, json={"url": "https://hooks.example.com/h"})
    assert r.status_code == 503 and r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["code"] == "webhooks_not_configured"
    assert "AUTHSERVER_WEBHOOK_KEY" in r.json()["detail"]
    assert (await client.get("/v1/webhooks", headers=admin_headers)).json() == {"data": []}


async def test_the_delivery_log_pages(hook_client, admin_headers, receiver):
    rx = receiver()
    ep = (await hook_client.post("/v1/webhooks", headers=admin_headers, json={"url": rx.url})).json()["id"]
    for _ in range(5):
        await hook_client.post("/v1/keys", headers=admin_headers, json={})
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await hook_client.get(f"/v1/webhooks/{ep}/deliveries", headers=admin_headers, params=params)).json()
        seen += [d["id"] for d in page["data"]]
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == 5 == len(set(seen)) and seen == sorted(seen, reverse=True)
    r = await hook_client.get("/v1/webhooks/deliveries", headers=admin_headers, params={"cursor": "nope"})
    assert r.status_code == 400 and r.headers["content-type"].startswith(PROBLEM)
