"""Change notices between replicas, over Redis pub/sub.

A replica that commits a change applies it to its own cache, then publishes
``{tenant, kid, origin}``. Every other replica rereads that key's row and
applies it. A tenant change (its shard count) is ``{tenant, kind: "tenant",
origin}``: the others reread that tenant's row. (A replica that predates the
tenant kind finds no kid and ignores it; its reconcile loop catches up.)
A subject's shared rate limits changed: ``{tenant, kind: "subject", subject,
origin}``: the others reread that subject's row.
Pub/sub is at-most-once: a notice sent while a replica was
disconnected is lost, so after every (re)subscribe the replica rebuilds its
cache from the database. While Redis is down, the reconcile loop (every
``degraded_cache_ttl_seconds``) bounds how stale a replica can be.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

log = logging.getLogger("authserver.invalidation")


class Invalidation:
    def __init__(
        self,
        redis: Redis,
        channel: str,
        replica_id: str,
        on_notice: Callable[[str, str], Awaitable[None]],
        on_subscribed: Callable[[bool], Awaitable[None]],
        on_degraded: Callable[[], None],
        on_tenant_notice: Callable[[str], Awaitable[None]] | None = None,
        on_subject_notice: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.replica_id = replica_id
        self.on_notice = on_notice
        self.on_subscribed = on_subscribed  # argument: True on a RE-subscribe
        self.on_degraded = on_degraded
        self.on_tenant_notice = on_tenant_notice
        self.on_subject_notice = on_subject_notice
        self.connected = False
        self._subscribed_once = False

    async def publish(self, tenant_id: str, kid: str) -> None:
        await self._send({"tenant": tenant_id, "kid": kid, "origin": self.replica_id})

    async def publish_tenant(self, tenant_id: str) -> None:
        await self._send({"tenant": tenant_id, "kind": "tenant", "origin": self.replica_id})

    async def publish_subject(self, tenant_id: str, subject: str) -> None:
        await self._send({"tenant": tenant_id, "kind": "subject", "subject": subject, "origin": self.replica_id})

    async def _send(self, notice: dict[str, str]) -> None:
        msg = json.dumps(notice)
        try:
            await self.redis.publish(self.channel, msg)
        except Exception as exc:  # the change is committed; others catch up by reconcile
            log.warning("could not publish a change notice (%s); replicas catch up within the reconcile interval",
                        type(exc).__name__)
            self.on_degraded()

    async def run(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                resubscribe = self._subscribed_once
                self._subscribed_once = True
                self.connected = True
                backoff = 0.1
                if resubscribe:
                    log.info("resubscribed to change notices; rebuilding caches")
                await self.on_subscribed(resubscribe)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    await self._handle(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected:
                    log.warning("lost the change-notice channel (%s); degraded until Redis is back",
                                type(exc).__name__)
                    self.on_degraded()
                self.connected = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated
                except Exception:
                    pass

    async def _handle(self, data: bytes | str) -> None:
        try:
            notice = json.loads(data)
            tenant, origin, kind = notice["tenant"], notice.get("origin"), notice.get("kind")
            subject = notice["subject"] if kind == "subject" else None
            kid = None if kind in ("tenant", "subject") else notice["kid"]
            named = subject if kind == "subject" else kid  # what the notice is about
            if not isinstance(tenant, str) or not (kind == "tenant" or isinstance(named, str)):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignored a malformed change notice")
            return
        if origin == self.replica_id:
            return
        try:
            if kid is not None:
                await self.on_notice(tenant, kid)
            elif subject is not None:
                if self.on_subject_notice is not None:
                    await self.on_subject_notice(tenant, subject)
            elif self.on_tenant_notice is not None:
                await self.on_tenant_notice(tenant)
        except Exception as exc:  # database down: the reconcile loop retries
            log.warning("could not apply a change notice (%s)", type(exc).__name__)
