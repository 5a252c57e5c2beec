"""The running service's objects, assembled in one place (``Core.build``)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .db import create_engine, session_factory
from .db.checkpoints import checkpointed_file
from .db.migrate import upgrade_async
from .db.writes import Transactions
from .invalidation import Invalidation
from .keycache import KeyCache
from .metrics import Metrics
from .ratelimit import MemoryLimiter, RedisLimiter
from .services import (
    CacheSync,
    Introspector,
    KeyGenerator,
    KeyLifecycle,
    KeyQueries,
    Prepublisher,
    Publisher,
    TenantService,
)
from .services.common import no_notice
from .services.consumers import ConsumerPortal
from .services.credits import Credits
from .services.leaks import GitHubKeys, LeakReports
from .services.subjects import SubjectLimitsService, no_subject_notice
from .services.tenants import no_tenant_notice
from .services.usage import UsageQueries, UsageRecorder
from .services.webhook_sender import WebhookSender
from .services.webhooks import WebhookService, load_box
from .settings import Settings

__all__ = ["Core"]

log = logging.getLogger("authserver")


@dataclass(frozen=True, slots=True)
class _Redis:
    client: Any
    limiter: RedisLimiter
    invalidation: Invalidation


@dataclass
class Core:
    settings: Settings
    clock: Callable[[], float]
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    cache: KeyCache
    keygen: KeyGenerator
    # the job services: what the controllers, the CLI and tests call
    tenants: TenantService
    lifecycle: KeyLifecycle
    queries: KeyQueries
    introspector: Introspector
    sync: CacheSync
    subjects: SubjectLimitsService
    prepublisher: Prepublisher | None  # instant activation; None when it is off
    metrics: Metrics
    limiter: MemoryLimiter | RedisLimiter
    consumers: ConsumerPortal  # the consumer portal: sign-in links, a subject's own keys
    webhooks: WebhookService
    redis: Any = None
    invalidation: Invalidation | None = None
    replica_id: str = ""
    usage: UsageRecorder | None = None  # what gateways report (with the gRPC services)
    usage_queries: UsageQueries | None = None
    leaks: LeakReports | None = None  # GitHub's secret-scanning reports (always built)
    # Envoy's control plane (AUTHSERVER_XDS_PORT); None when off
    gateway: Any = None  # gateways.grpcserver.GatewayServer: grpc loads only when used
    # delivers the webhook outbox under `serve`; None without AUTHSERVER_WEBHOOK_KEY
    webhook_sender: WebhookSender | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, clock: Callable[[], float] = time.time) -> Core:
        """Every collaborator is made here and handed to what uses it."""
        replica_id = uuid.uuid4().hex[:12]
        # SQLite: the WAL is checkpointed by a thread of the writer's (Transactions), not in commits
        engine = create_engine(settings.database_url, auto_checkpoint=checkpointed_file(
            settings.database_url, settings.sqlite_checkpoint_seconds) is None)
        sessions = session_factory(engine)
        cache = KeyCache(clock, push_window=settings.push_window_seconds,
                         recent_window=settings.recent_window_seconds)
        keygen = KeyGenerator(
            settings.keygen_threads, clock, pool_size=settings.mint_pool_size,
            pool_algorithms=settings.pool_algorithms, pool_max_age=settings.mint_pool_max_age_seconds,
        )
        redis: _Redis | None = None

        def redis_connected() -> bool:  # read at scrape time, when ``redis`` is set
            return redis is not None and redis.invalidation.connected

        metrics = Metrics(cache, redis_connected if settings.redis_url else None,
                          pools=keygen.pool_sizes if keygen.pools else None)
        sync = CacheSync(sessions, cache, reconcile_interval=settings.degraded_cache_ttl_seconds,
                         on_reconcile_failure=metrics.reconcile_failures.inc, clock=clock)
        if settings.redis_url:
            redis = _connect_redis(settings, clock, replica_id, sync, metrics.redis_degraded)
        publisher = Publisher(cache, redis.invalidation.publish if redis else no_notice, metrics.on_change,
                              on_minted=sync.minted_here)
        instant = Prepublisher(
            sessions, cache, publisher, keygen.refill_executor, pool_size=settings.instant_activation_pool_size,
            max_age=settings.instant_activation_max_age_seconds, min_age=settings.gateway_cache_seconds + 5,
            lease=settings.instant_activation_lease_seconds, owner=replica_id, clock=clock,
        ) if settings.instant_activation else None
        transactions = Transactions(settings.database_url, sessions,
                                    checkpoint_seconds=settings.sqlite_checkpoint_seconds)
        lifecycle = KeyLifecycle(settings, sessions, cache, keygen, publisher, transactions, instant=instant,
                                 clock=clock)
        limiter = redis.limiter if redis else MemoryLimiter(clock)
        usage = UsageRecorder(sessions, flush_interval=settings.usage_flush_seconds, clock=clock)
        queries = KeyQueries(settings, sessions, cache, clock)
        usage_queries = UsageQueries(sessions)
        box = load_box(settings)
        return cls(
            webhooks=WebhookService(settings, sessions, box, clock),
            webhook_sender=WebhookSender(settings, sessions, box, owner=replica_id, clock=clock,
                                         on_result=lambda r: metrics.webhook_attempts.labels(r).inc())
            if box else None,
            gateway=_gateway_server(settings, cache, metrics, limiter, usage, clock) if settings.xds_port is not None
            else None,
            usage=usage, usage_queries=usage_queries,
            consumers=ConsumerPortal(settings, sessions, cache, lifecycle, queries, usage_queries, clock),
            leaks=LeakReports(cache, sessions, lifecycle, GitHubKeys(settings.secret_scanning_keys_url, clock=clock),
                              clock),
            settings=settings, clock=clock, engine=engine, sessions=sessions, cache=cache, keygen=keygen,
            tenants=TenantService(settings, sessions, cache, keygen, lifecycle, clock,
                                  notify=redis.invalidation.publish_tenant if redis else no_tenant_notice),
            lifecycle=lifecycle,
            queries=queries,
            introspector=Introspector(sessions, cache, clock, limiter),
            sync=sync, prepublisher=instant, metrics=metrics,
            subjects=SubjectLimitsService(sessions, cache, redis.invalidation.publish_subject if redis
                                          else no_subject_notice, clock),
            limiter=limiter,
            redis=redis.client if redis else None,
            invalidation=redis.invalidation if redis else None,
            replica_id=replica_id,
        )

    @property
    def db_ok(self) -> bool:
        """Whether the database answered the last reread."""
        return self.sync.db_ok

    async def reconcile_once(self) -> int:
        return await self.sync.reconcile_once()

    async def start(self) -> None:
        if self.settings.run_migrations:
            await upgrade_async(self.settings.database_url)
        await self.sync.start()
        try:
            await self.lifecycle.rehearse()
        except Exception as exc:  # only a warm-up: the first mint compiles them instead
            log.warning("could not rehearse a mint's writes (%s)", type(exc).__name__)
        self._spawn(self.sync.run(), "reconcile")
        self._spawn(self.keygen.keep_pools_full(), "keypair-pool")
        if self.prepublisher is not None:
            self._spawn(self.prepublisher.run(), "prepublish")
        if self.invalidation is not None:
            self._spawn(self.invalidation.run(), "invalidation")
        if self.webhook_sender is not None:
            self._spawn(self.webhook_sender.run(), "webhooks")
        if self.gateway is not None:
            await self.gateway.start()
            self._spawn(self.gateway.xds.run(), "xds")
            if self.usage is not None:
                self._spawn(self.usage.run(), "usage")

    def _spawn(self, coro: Any, name: str) -> None:
        self.tasks.append(asyncio.create_task(coro, name=name))

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
            if self.usage is not None:
                try:  # what was counted since the last batch
                    await self.usage.flush()
                except Exception as exc:
                    log.warning("usage: the last batch was lost (%s)", type(exc).__name__)
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        if self.webhook_sender is not None:
            await self.webhook_sender.close()
        await self.close_database()
        if isinstance(self.limiter, RedisLimiter):
            self.limiter.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def close_database(self) -> None:
        """Key generation threads, the writer thread and the engine."""
        self.keygen.close()
        self.lifecycle.transactions.close()
        await self.engine.dispose()


def _gateway_server(settings: Settings, cache: KeyCache, metrics: Metrics, limiter: MemoryLimiter | RedisLimiter,
                    usage: UsageRecorder, clock: Callable[[], float]) -> Any:
    from .gateways.accesslog import AccessLogMetrics, AccessLogServer
    from .gateways.grpcserver import GatewayServer
    from .gateways.ratelimit import RateLimitMetrics, RateLimitServer
    from .gateways.xds import XdsMetrics, XdsServer

    xds = XdsServer(cache, settings.xds_node_tenants, XdsMetrics(metrics.registry), clock=clock,
                    require_peer_identity=settings.xds_tls)
    shared = isinstance(limiter, RedisLimiter)
    if not shared:
        log.warning("per-key rate limits are counted per replica: set AUTHSERVER_REDIS_URL to share them")
    rls = RateLimitServer(cache, limiter, RateLimitMetrics(metrics.registry, shared), Credits(usage.sessions, clock),
                          access=xds.access)
    return GatewayServer(settings, xds, rls,
                         AccessLogServer(cache, xds.access, usage, AccessLogMetrics(metrics.registry)))


def _connect_redis(settings: Settings, clock: Callable[[], float], replica_id: str, sync: CacheSync,
                   on_degraded: Callable[[], None]) -> _Redis:
    import redis.asyncio as aioredis

    assert settings.redis_url  # only called with one
    client = aioredis.from_url(
        settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=5,
    )
    ns = settings.redis_namespace
    return _Redis(
        client,
        RedisLimiter(client, clock, ns, MemoryLimiter(clock), on_degraded=on_degraded, replica=replica_id,
                     share=settings.ratelimit_share),
        Invalidation(client, f"{ns}:changes", replica_id, on_notice=sync.refresh_key,
                     on_subscribed=sync.on_subscribed, on_degraded=on_degraded,
                     on_tenant_notice=sync.refresh_tenant, on_subject_notice=sync.refresh_subject),
    )
