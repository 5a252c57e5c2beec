"""The outbox on the service layer, with a settable clock and a real local
receiver; signatures checked with the independent `standardwebhooks` package."""

from __future__ import annotations

import json
import random
from contextlib import asynccontextmanager

import pytest
from _db import query_sql
from _webhooks import signed_by, verified

from authserver.errors import InvalidInput, WebhooksUnavailable
from authserver.offline import open_core
from authserver.schemas import key_spec
from authserver.services import Actor
from authserver.services.webhook_sender import WebhookSender, backoff_seconds

ACTOR = Actor("test")
ORDER = ["key.created", "key.rolled", "key.revoked"]


@asynccontextmanager
async def core_with_clock(settings, clock):
    async with open_core(settings) as core:
        await core.tenants.create_tenant("default")
        # the same objects Core.build makes, on the test's clock
        core.webhooks.clock = clock
        core.lifecycle.clock = clock
        sender = WebhookSender(settings, core.sessions, core.webhooks.box, owner="t1", clock=clock,
                               rng=random.Random(1))
        try:
            yield core, sender
        finally:
            await sender.close()


async def drain(sender: WebhookSender) -> int:
    total = 0
    while n := await sender.send_due():
        total += n
    return total


async def test_key_events_are_signed_and_delivered(hook_settings, clock, receiver):
    rx = receiver()
    settings = hook_settings()
    async with core_with_clock(settings, clock) as (core, sender):
        endpoint, secret = await core.webhooks.create("default", rx.url, None, "ours", ACTOR)
        assert secret.startswith("whsec_")
        row, minted = await core.lifecycle.mint("default", key_spec({"name": "k", "scopes": ["read"]}), ACTOR)
        new, new_minted, _ = await core.lifecycle.roll("default", row.id, ACTOR, grace_seconds=60)
        await core.lifecycle.revoke("default", new.id, ACTOR)
        # an admin key action is audited but is not a key event
        await core.lifecycle.mint("default", key_spec({"name": "adm"}), ACTOR, kind="admin")
        assert await drain(sender) == 3
    # sent concurrently: no order between them (as the spec allows); each has its own id
    payloads = sorted((verified(secret, r) for r in rx.requests), key=lambda p: ORDER.index(p["type"]))
    assert [p["type"] for p in payloads] == ORDER
    assert payloads[0]["data"]["key"]["id"] == row.id and payloads[0]["data"]["key"]["name"] == "k"
    assert payloads[1]["data"]["key"]["rolled_from"] == row.id
    assert payloads[2]["data"]["key"]["revoked_at"] is not None
    assert len({r.headers["webhook-id"] for r in rx.requests}) == 3
    for r in rx.requests:
        assert minted.key.encode() not in r.body and new_minted.key.encode() not in r.body
    # another secret does not verify: the check can fail
    from standardwebhooks.webhooks import WebhookVerificationError

    import keys.webhooks as wh
    with pytest.raises(WebhookVerificationError):
        verified(wh.new_secret(), rx.requests[0])


async def test_only_subscribed_types_and_tenant(hook_settings, clock, receiver):
    rx = receiver()
    async with core_with_clock(hook_settings(), clock) as (core, sender):
        await core.tenants.create_tenant("other")
        await core.webhooks.create("default", rx.url, ["key.revoked"], None, ACTOR)
        row, _ = await core.lifecycle.mint("default", key_spec({}), ACTOR)
        await core.lifecycle.mint("other", key_spec({}), ACTOR)
        await core.lifecycle.revoke("default", row.id, ACTOR)
        assert await drain(sender) == 1
    assert rx.requests[0].body.count(b"key.revoked") == 1


async def test_retries_with_backoff_then_delivered_with_the_same_id(hook_settings, clock, receiver):
    rx = receiver(statuses=[500, 503])
    async with core_with_clock(hook_settings(), clock) as (core, sender):
        endpoint, secret = await core.webhooks.create("default", rx.url, None, None, ACTOR)
        await core.lifecycle.mint("default", key_spec({}), ACTOR)
        assert await sender.send_due() == 1
        [(d, kind)] = await core.webhooks.deliveries("default", endpoint.id)
        assert (d.status, d.attempts, d.last_status_code, d.last_error) == ("pending", 1, 500, "HTTP 500")
        # the first retry waits 5-10 s (base 10 s, half of it random)
        wait_ms = d.next_attempt_at - clock() * 1000
        assert 5000 <= wait_ms <= 10000
        assert await sender.send_due() == 0  # not due yet
        clock.advance(wait_ms / 1000)
        assert await sender.send_due() == 1
        [(d, _)] = await core.webhooks.deliveries("default", endpoint.id)
        assert (d.status, d.attempts, d.last_status_code) == ("pending", 2, 503)
        assert 10000 <= d.next_attempt_at - clock() * 1000 <= 20000  # doubled
        clock.advance(20)
        assert await sender.send_due() == 1
        [(d, _)] = await core.webhooks.deliveries("default", endpoint.id)
        assert (d.status, d.attempts, d.last_status_code, d.last_error) == ("delivered", 3, 204, None)
    assert len(rx.requests) == 3
    assert len({r.headers["webhook-id"] for r in rx.requests}) == 1
    assert len({r.body for r in rx.requests}) == 1


def test_backoff_is_exponential_capped_and_jittered():
    rng = random.Random(7)
    waits = [backoff_seconds(n, 10, 600, rng) for n in range(1, 10)]
    for n, w in enumerate(waits, start=1):
        delay = min(600, 10 * 2 ** (n - 1))
        assert delay / 2 <= w <= delay
    assert len({round(backoff_seconds(3, 10, 600, rng), 6) for _ in range(20)}) > 1  # jitter


async def test_max_attempts_then_failed_and_replay_keeps_the_id(hook_settings, clock, receiver):
    rx = receiver(default=500)
    async with core_with_clock(hook_settings(webhook_max_attempts=2), clock) as (core, sender):
        endpoint, secret = await core.webhooks.create("default", rx.url, None, None, ACTOR)
        await core.lifecycle.mint("default", key_spec({}), ACTOR)
        await sender.send_due()
        clock.advance(60)
        await sender.send_due()
        clock.advance(3600)
        assert await sender.send_due() == 0
        [(d, _)] = await core.webhooks.deliveries("default", endpoint.id)
        assert (d.status, d.attempts) == ("failed", 2)
        rx.default = 200
        replay, kind = await core.webhooks.replay("default", d.id, ACTOR)
        assert replay.id != d.id and replay.replay_of == d.id and kind == "key.created"
        assert await sender.send_due() == 1
        log = await core.webhooks.deliveries("default", endpoint.id)
        assert [(x.status, x.replay_of) for x, _ in log] == [("delivered", d.id), ("failed", None)]
    assert len(rx.requests) == 3 and len({r.headers["webhook-id"] for r in rx.requests}) == 1
    assert signed_by(secret, rx.requests[-1]) and b'"key.created"' in rx.requests[-1].body
    assert not signed_by(secret.replace("whsec_", "whsec_A"), rx.requests[-1])


async def test_a_removed_endpoint_gets_nothing_more(hook_settings, clock, receiver):
    rx = receiver()
    async with core_with_clock(hook_settings(), clock) as (core, sender):
        endpoint, _ = await core.webhooks.create("default", rx.url, None, None, ACTOR)
        await core.lifecycle.mint("default", key_spec({}), ACTOR)
        await core.webhooks.delete("default", endpoint.id, ACTOR)
        await core.lifecycle.mint("default", key_spec({}), ACTOR)
        assert await drain(sender) == 0
        [(d, _)] = await core.webhooks.deliveries("default", endpoint.id)
        assert d.status == "cancelled"
        assert await core.webhooks.endpoints("default") == []
    assert rx.requests == []


async def test_expiring_and_grace_ending_fire_once_per_key(hook_settings, clock, receiver):
    rx = receiver()
    async with core_with_clock(hook_settings(webhook_grace_ending_seconds=3600), clock) as (core, sender):
        endpoint, secret = await core.webhooks.create("default", rx.url, ["key.expiring", "key.grace_ending"],
                                                      None, ACTOR)
        soon, _ = await core.lifecycle.mint("default", key_spec({"expires_in": 3 * 86400}), ACTOR)
        await core.lifecycle.mint("default", key_spec({"expires_in": 30 * 86400}), ACTOR)  # not yet
        rolled, _ = await core.lifecycle.mint("default", key_spec({}), ACTOR)
        await core.lifecycle.roll("default", rolled.id, ACTOR, grace_seconds=7200)
        assert await sender.scan_once() == 1  # soon: within 7 days; the grace ends in 2 h, not within 1 h
        assert await sender.scan_once() == 0  # once per key and kind
        clock.advance(3601)
        assert await sender.scan_once() == 1  # the grace now ends within the hour
        assert await sender.scan_once() == 0
        # per tenant: 40 days catches the 30-day key too
        await core.webhooks.set_expiring_days("default", 40, ACTOR)
        assert await core.webhooks.expiring_days("default") == 40
        assert await sender.scan_once() == 1
        assert await drain(sender) == 3
    assert all(signed_by(secret, r) for r in rx.requests)
    payloads = [json.loads(r.body) for r in rx.requests]
    assert sorted(p["type"] for p in payloads) == ["key.expiring", "key.expiring", "key.grace_ending"]
    first = next(p for p in payloads if p["data"]["key"]["id"] == soon.id)
    assert first["data"]["details"]["expires_at"] == soon.expires_at


async def test_secrets_are_not_in_a_database_dump(hook_settings, clock, receiver, webhook_key):
    rx = receiver()
    settings = hook_settings()
    async with core_with_clock(settings, clock) as (core, sender):
        _, secret = await core.webhooks.create("default", rx.url, None, None, ACTOR)
        await core.lifecycle.mint("default", key_spec({}), ACTOR)
        await drain(sender)
        tables = [t for (t,) in await query_sql(
            settings.database_url,
            "SELECT name FROM sqlite_master WHERE type='table'" if settings.is_sqlite else
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    assert "webhook_endpoints" in tables
    dump = ""
    for t in tables:
        dump += repr(await query_sql(settings.database_url, f'SELECT * FROM "{t}"'))
    assert rx.url in dump  # the dump is real
    raw = secret.removeprefix("whsec_")
    for needle in (secret, raw, raw[:16], webhook_key, webhook_key[:16]):
        assert needle not in dump


async def test_without_a_key_webhooks_are_refused(make_settings, clock):
    async with open_core(make_settings()) as core:
        await core.tenants.create_tenant("default")
        assert core.webhook_sender is None
        with pytest.raises(WebhooksUnavailable, match="AUTHSERVER_WEBHOOK_KEY"):
            await core.webhooks.create("default", "https://example.com/h", None, None, ACTOR)


@pytest.mark.parametrize("url", [
    "http://example.com/h",  # http off loopback
    "ftp://127.0.0.1/h", "https://", "https://user:pw@example.com/h", "https://example.com/a b",
    "https://example.com:99999/h", "/relative",
])
async def test_bad_urls_are_refused(hook_settings, clock, url):
    async with core_with_clock(hook_settings(), clock) as (core, _):
        with pytest.raises(InvalidInput):
            await core.webhooks.create("default", url, None, None, ACTOR)


async def test_http_loopback_needs_the_setting(hook_settings, clock):
    async with core_with_clock(hook_settings(webhook_allow_http_loopback=False), clock) as (core, _):
        with pytest.raises(InvalidInput, match="https"):
            await core.webhooks.create("default", "http://127.0.0.1:9/h", None, None, ACTOR)
        ep, _ = await core.webhooks.create("default", "https://hooks.example.com/h", ["key.leaked"], None, ACTOR)
        assert ep.event_types == ["key.leaked"]


async def test_a_change_that_rolls_back_queues_nothing(hook_settings, clock, receiver):
    """Deliveries are written in the key change's transaction: a mint refused at
    the tenant's cap (409, rolled back) leaves no event behind."""
    from authserver.errors import QuotaExceeded

    rx = receiver()
    async with core_with_clock(hook_settings(max_live_keys_per_tenant=1), clock) as (core, sender):
        endpoint, _ = await core.webhooks.create("default", rx.url, None, None, ACTOR)
        await core.lifecycle.mint("default", key_spec({}), ACTOR)
        with pytest.raises(QuotaExceeded):
            await core.lifecycle.mint("default", key_spec({}), ACTOR)
        assert len(await core.webhooks.deliveries("default", endpoint.id)) == 1
        assert await drain(sender) == 1


async def test_any_audited_key_leak_becomes_a_webhook(hook_settings, clock, receiver):
    """Leak detection only writes the audit event (the generic audit writer
    here); the outbox hook makes it a key.leaked delivery."""
    rx = receiver()
    async with core_with_clock(hook_settings(), clock) as (core, sender):
        _, secret = await core.webhooks.create("default", rx.url, ["key.leaked"], None, ACTOR)
        row, _ = await core.lifecycle.mint("default", key_spec({"subject": "cust_1"}), ACTOR)
        await core.lifecycle.record("default", Actor("github-secret-scanning"), "key.leaked", row.id,
                                    {"url": "https://github.com/o/r/blob/x", "source": "content"})
        assert await drain(sender) == 1
    payload = verified(secret, rx.requests[0])
    assert payload["type"] == "key.leaked" and payload["data"]["key"]["subject"] == "cust_1"
    assert payload["data"]["details"]["source"] == "content"


async def test_a_trickling_receiver_is_cut_at_the_timeout(hook_settings, clock, receiver):
    rx = receiver(delay=3)
    async with core_with_clock(hook_settings(webhook_timeout_seconds=0.5), clock) as (core, sender):
        endpoint, _ = await core.webhooks.create("default", rx.url, None, None, ACTOR)
        await core.lifecycle.mint("default", key_spec({}), ACTOR)
        assert await sender.send_due() == 1
        [(d, _)] = await core.webhooks.deliveries("default", endpoint.id)
        assert (d.status, d.last_error, d.last_status_code) == ("pending", "timeout", None)


async def test_a_sender_checks_the_url_and_the_key_at_send_time(hook_settings, clock, receiver):
    """Settings tightened after registration, or another sealing key: the
    attempt fails with a reason in the log, and nothing is sent."""
    import keys.webhooks as wh

    rx = receiver()
    settings = hook_settings()
    async with core_with_clock(settings, clock) as (core, _):
        endpoint, _ = await core.webhooks.create("default", rx.url, None, None, ACTOR)
        await core.lifecycle.mint("default", key_spec({}), ACTOR)
        strict = WebhookSender(settings.replace(webhook_allow_http_loopback=False), core.sessions, core.webhooks.box,
                               owner="t2", clock=clock)
        other_key = WebhookSender(settings, core.sessions, wh.SecretBox(wh.new_box_key()), owner="t3", clock=clock)
        try:
            assert await strict.send_due() == 1
            [(d, _)] = await core.webhooks.deliveries("default", endpoint.id)
            assert d.status == "pending" and d.last_error.startswith("url refused")
            clock.advance(3600)
            assert await other_key.send_due() == 1
            [(d, _)] = await core.webhooks.deliveries("default", endpoint.id)
            assert d.last_error == "the signing secret does not open with this server's webhook key"
        finally:
            await strict.close()
            await other_key.close()
    assert rx.requests == []


async def test_at_most_twenty_endpoints(hook_settings, clock):
    from authserver.errors import Conflict

    async with core_with_clock(hook_settings(), clock) as (core, _):
        made = [await core.webhooks.create("default", f"https://h{i}.example.com/", None, None, ACTOR)
                for i in range(20)]
        with pytest.raises(Conflict, match="at most 20"):
            await core.webhooks.create("default", "https://h.example.com/", None, None, ACTOR)
        await core.webhooks.delete("default", made[0][0].id, ACTOR)
        await core.webhooks.create("default", "https://h.example.com/", None, None, ACTOR)


async def test_a_rotated_key_keeps_delivering_with_the_same_secret(hook_settings, clock, receiver):
    """The key rotates (the old one kept as previous): deliveries still carry
    signatures the endpoint's unchanged secret verifies, before and after reseal."""
    import keys.webhooks as wh

    rx = receiver()
    old = wh.new_box_key()
    settings = hook_settings(webhook_key=old)
    async with core_with_clock(settings, clock) as (core, _):
        endpoint, secret = await core.webhooks.create("default", rx.url, None, None, ACTOR)
        core.webhooks.box = wh.SecretBox(wh.new_box_key(), (old,))
        sender = WebhookSender(settings, core.sessions, core.webhooks.box, owner="t4", clock=clock)
        try:
            await core.lifecycle.mint("default", key_spec({}), ACTOR)
            assert await drain(sender) == 1
            assert await core.webhooks.reseal_all() == (1, 0, [])
            await core.lifecycle.mint("default", key_spec({}), ACTOR)
            assert await drain(sender) == 1
        finally:
            await sender.close()
    assert [verified(secret, r)["type"] for r in rx.requests] == ["key.created", "key.created"]
