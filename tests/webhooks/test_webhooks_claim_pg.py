"""Several senders (each with its own engine, as replicas) claim from one
PostgreSQL outbox at once: every delivery is sent exactly once."""

from __future__ import annotations

import asyncio
import collections
import random

from authserver.offline import open_core
from authserver.schemas import key_spec
from authserver.services import Actor
from authserver.services.webhook_sender import WebhookSender
from authserver.settings import Settings

ACTOR = Actor("test")
EVENTS = 60


async def test_concurrent_claimers_do_not_double_send(fresh_postgres_url, webhook_key, receiver):
    rx = receiver(delay=0.05)
    settings = Settings(database_url=fresh_postgres_url, webhook_key=webhook_key, webhook_allow_http_loopback=True,
                        log_json=False)
    async with open_core(settings) as core:
        await core.tenants.create_tenant("default")
        await core.webhooks.create("default", rx.url, None, None, ACTOR)
        for _ in range(EVENTS):
            await core.lifecycle.mint("default", key_spec({}), ACTOR)
    async with open_core(settings) as a, open_core(settings) as b, open_core(settings) as c:
        senders = [WebhookSender(settings, core.sessions, core.webhooks.box, owner=f"r{i}", rng=random.Random(i),
                                 batch=7)
                   for i, core in enumerate((a, b, c, a, b, c))]  # two senders per engine too

        async def drain(sender: WebhookSender) -> int:
            total = 0
            while n := await sender.send_due():
                total += n
            return total

        try:
            counts = await asyncio.gather(*(drain(s) for s in senders))
        finally:
            for s in senders:
                await s.close()
        rows = await a.webhooks.deliveries("default", limit=500)
    unsent = [(d.id, d.status, d.attempts, d.last_error) for d, _ in rows if d.status != "delivered"]
    assert not unsent, f"deliveries left unsent (a failed attempt waits for its backoff): {unsent}"
    ids = collections.Counter(r.headers["webhook-id"] for r in rx.requests)
    assert len(ids) == EVENTS and set(ids.values()) == {1}, "a delivery was sent twice"
    assert sum(counts) == EVENTS
    assert sum(1 for c in counts if c) >= 2, f"only one sender claimed anything: {counts}"
    assert {d.status for d, _ in rows} == {"delivered"} and {d.attempts for d, _ in rows} == {1}
    print(f"\nclaims per sender: {counts}")
