"""The running service's objects, assembled once per app from Settings."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .db import create_engine, session_factory
from .db.migrate import upgrade_async
from .invalidation import Invalidation
from .keycache import KeyCache
from .metrics import Metrics
from .ratelimit import MemoryLimiter, RedisLimiter
from .services import KeyGenerator, KeyService
from .services.prepublish import Prepublisher
from .settings import Settings

log = logging.getLogger("authserver")


@dataclass
class Core:
    settings: Settings
    clock: Callable[[], float]
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    cache: KeyCache
    keygen: KeyGenerator
    service: KeyService
    metrics: Metrics
    limiter: MemoryLimiter | RedisLimiter
    redis: Any = None
    invalidation: Invalidation | None = None
    replica_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    tasks: list[asyncio.Task] = field(default_factory=list)
    last_reconcile_ms: int = 0
    db_ok: bool = True

    @classmethod
    def build(cls, settings: Settings, clock: Callable[[], float] = time.time) -> "Core":
        engine = create_engine(settings.database_url)
        sessions = session_factory(engine)
        cache = KeyCache(clock)
        keygen = KeyGenerator(
            settings.keygen_threads, clock, pool_size=settings.mint_pool_size,
            pool_algorithms=settings.pool_algorithms, pool_max_age=settings.mint_pool_max_age_seconds,
        )
        metrics = Metrics(cache)
        service = KeyService(settings, sessions, cache, keygen, clock, on_change=metrics.on_change)
        if settings.instant_activation:
            service.prepublisher = Prepublisher(
                service, pool_size=settings.instant_activation_pool_size,
                max_age=settings.instant_activation_max_age_seconds,
                min_age=settings.gateway_cache_seconds + 5,
            )
        limiter: MemoryLimiter | RedisLimiter = MemoryLimiter(clock)
        core = cls(settings, clock, engine, sessions, cache, keygen, service, metrics, limiter)
        if settings.redis_url:
            core._wire_redis()
        return core

    def _wire_redis(self) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.from_url(
            self.settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=5,
        )
        ns = self.settings.redis_namespace
        self.limiter = RedisLimiter(self.redis, self.clock, ns, MemoryLimiter(self.clock),
                                    on_degraded=self.metrics.redis_degraded)
        self.invalidation = Invalidation(
            self.redis, f"{ns}:changes", self.replica_id,
            on_notice=lambda tenant, kid: self.service.refresh_key(kid),
            on_subscribed=self._on_subscribed,
            on_degraded=self.metrics.redis_degraded,
        )
        self.service.notify = self.invalidation.publish
        self.metrics.redis_connected = lambda: self.invalidation.connected  # type: ignore[union-attr]

    async def start(self) -> None:
        if self.settings.run_migrations:
            await upgrade_async(self.settings.database_url)
        self.last_reconcile_ms = int(self.clock() * 1000)
        await self.service.load()
        self.tasks.append(asyncio.create_task(self._reconcile_loop(), name="reconcile"))
        self.tasks.append(asyncio.create_task(self.keygen.keep_pools_full(), name="keypair-pool"))
        if self.service.prepublisher is not None:
            self.tasks.append(asyncio.create_task(self.service.prepublisher.run(), name="prepublish"))
        if self.invalidation is not None:
            self.tasks.append(asyncio.create_task(self.invalidation.run(), name="invalidation"))

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        self.keygen.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()

    async def rebuild_cache(self) -> None:
        """Load everything into a new cache, then swap it in."""
        fresh = KeyCache(self.clock)
        await self.service.load(fresh)
        self.cache.replace_with(fresh)

    async def _on_subscribed(self, resubscribed: bool) -> None:
        # Notices sent while we were not subscribed are lost: catch up from the
        # database (a full rebuild after a reconnect; the start-up gap otherwise).
        try:
            if resubscribed:
                await self.rebuild_cache()
            else:
                await self.reconcile_once()
        except Exception as exc:
            log.warning("could not catch up after subscribing (%s); the reconcile loop retries", type(exc).__name__)

    async def reconcile_once(self) -> int:
        """Reread rows changed recently (by the CLI or another replica).

        The window overlaps by a few seconds: applying a row twice is harmless,
        missing one (clock skew between writers) is not.
        """
        started = int(self.clock() * 1000)
        changed = await self.service.reconcile(self.last_reconcile_ms - 5000)
        self.last_reconcile_ms = started
        return changed

    async def _reconcile_loop(self) -> None:
        interval = self.settings.degraded_cache_ttl_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reconcile_once()
                if not self.db_ok:
                    log.info("database reachable again")
                self.db_ok = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving the last good snapshot
                if self.db_ok:
                    log.warning("reconcile failed, serving the last good key snapshot: %s", type(exc).__name__)
                self.db_ok = False
                self.metrics.reconcile_failures.inc()
