"""The outbox survives kill -9 of the sender: `authserver serve` killed while
deliveries are in flight, events queued while it is down, then a restart. No
event is lost; an event arrives twice only with the same webhook-id and body."""

from __future__ import annotations

import asyncio
import collections

from _proc import Server, wait_until
from _webhooks import verified

from authserver.offline import open_core
from authserver.schemas import key_spec
from authserver.services import Actor
from authserver.settings import Settings

ACTOR = Actor("test")


async def _setup(settings: Settings, url: str) -> str:
    async with open_core(settings) as core:
        await core.tenants.create_tenant("default")
        _, secret = await core.webhooks.create("default", url, ["key.created"], None, ACTOR)
    return secret


async def _mint(settings: Settings, n: int) -> None:
    async with open_core(settings) as core:
        for _ in range(n):
            await core.lifecycle.mint("default", key_spec({}), ACTOR)


async def _state(settings: Settings) -> tuple[set[str], collections.Counter[str]]:
    async with open_core(settings) as core:
        rows = await core.webhooks.deliveries("default", limit=500)
    return {d.event_id for d, _ in rows}, collections.Counter(d.status for d, _ in rows)


def test_no_event_lost_across_kill_9(tmp_path, receiver, webhook_key):
    rx = receiver(delay=1.5)  # slow: the first deliveries are still in flight at the kill
    env = {"AUTHSERVER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
           "AUTHSERVER_WEBHOOK_KEY": webhook_key, "AUTHSERVER_WEBHOOK_ALLOW_HTTP_LOOPBACK": "true",
           "AUTHSERVER_WEBHOOK_POLL_SECONDS": "0.05", "AUTHSERVER_WEBHOOK_TIMEOUT_SECONDS": "5",
           "AUTHSERVER_WEBHOOK_LEASE_SECONDS": "6", "AUTHSERVER_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
           "AUTHSERVER_LOG_JSON": "false"}
    settings = Settings(database_url=env["AUTHSERVER_DATABASE_URL"], webhook_key=webhook_key,
                        webhook_allow_http_loopback=True)
    secret = asyncio.run(_setup(settings, rx.url))
    asyncio.run(_mint(settings, 10))
    server = Server(env, log_dir=tmp_path).start()
    try:
        wait_until(lambda: len(rx.requests) >= 3, 30, what="deliveries in flight")
        server.kill()  # SIGKILL: nothing of the sender's shutdown runs; its leases stay behind
        in_flight = {r.headers["webhook-id"] for r in rx.requests}
        rx.delay = 0
        asyncio.run(_mint(settings, 5))  # queued while no sender runs
        server = Server(env, log_dir=tmp_path).start()
        wait_until(lambda: asyncio.run(_state(settings))[1] == {"delivered": 15}, 60,
                   what=f"every delivery delivered (log {server.log_path})")
    finally:
        server.kill()
    events, _ = asyncio.run(_state(settings))
    received = collections.defaultdict(set)
    for r in rx.requests:
        assert verified(secret, r)["type"] == "key.created"
        received[r.headers["webhook-id"]].add(r.body)
    assert set(received) == events and len(events) == 15  # none lost
    assert all(len(bodies) == 1 for bodies in received.values())  # a duplicate is the same message
    duplicated = [i for i, n in collections.Counter(r.headers["webhook-id"] for r in rx.requests).items() if n > 1]
    assert duplicated and set(duplicated) <= in_flight  # only what was in flight at the kill came twice
    print(f"\n{len(rx.requests)} requests for 15 events; {len(duplicated)} resent after the kill (same webhook-id)")
