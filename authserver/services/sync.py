"""Keeping the key cache in line with the database: load, reread, catch up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models import ApiKey, SubjectLimits, Tenant
from ..keycache import KeyCache
from .queries import state_filter

__all__ = ["CacheSync"]

log = logging.getLogger("authserver")

# key rows in memory at a time (loading, rereading): an ORM row costs ~7 KB
# while loaded, and the long-lived objects made meanwhile (the JWKS segments)
# pin the pymalloc arenas that held them: batches of 2000 left ~14 MB of
# arenas behind at start (100k keys), batches of 256 ~2 MB, in the same time;
# batches of 64 ~1 MB less again (RSS side by side, 10k-100k EdDSA keys), for
# ~1,200 more fetches at 100k keys (~0.1 s of a ~6 s load)
_CHUNK = 64
_OVERLAP_MS = 5000  # the reread window starts this long before the previous pass


class CacheSync:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], cache: KeyCache, *,
                 reconcile_interval: float, on_reconcile_failure: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.sessions = sessions
        self.cache = cache
        self.reconcile_interval = reconcile_interval
        self.on_reconcile_failure = on_reconcile_failure
        self.clock = clock
        self.last_reconcile_ms = 0
        self.db_ok = True
        # key id -> changed_at of the rows the cache already holds as of that
        # change (minted here, loaded, or reread once), while the reread window
        # holds them: the reread skips them. It read every changed row again on
        # each pass the window overlapped (~3 times), on the event loop: after a
        # bulk change or a start, 1k RS256 rows stalled the serving ~75 ms a pass
        self._current: dict[str, int] = {}

    def minted_here(self, row: ApiKey) -> None:
        self._current[row.id] = row.changed_at

    async def load(self, cache: KeyCache | None = None) -> None:
        """Fill ``cache`` (default: ours) with every tenant and published key."""
        cache = self.cache if cache is None else cache
        now = int(self.clock())
        async with self.sessions() as s:
            for tenant in (await s.scalars(select(Tenant))).all():
                cache.set_tenant(tenant)
            rows = await s.stream_scalars(
                # by kid, the JWKS order: each key's bytes are appended to its document
                # (the bytes and ETag depend on the set only, never on this order)
                select(ApiKey).where(state_filter("live", now))  # type: ignore[arg-type]  # "live" is never None
                .order_by(ApiKey.id).execution_options(yield_per=_CHUNK)
            )
            recent = (self.last_reconcile_ms or int(self.clock() * 1000)) - _OVERLAP_MS
            current = self._current if cache is self.cache else {}
            async for row in rows:
                cache.apply(row, loading=True)
                if row.changed_at >= recent:
                    current[row.id] = row.changed_at
            if cache is not self.cache:
                self._current = current  # the fresh cache, swapped in by the caller, holds these
            cache.compact()
            for limits in (await s.scalars(select(SubjectLimits).where(SubjectLimits.rate_limits.is_not(None)))):
                cache.apply_subject(limits)
            if cache.push_window > 0:
                # removals a gateway's cached JWKS may still hold: pushed as a deny list
                since = int(now - cache.push_window)
                recent_removals = select(ApiKey).where(
                    (ApiKey.kind == "api") & (
                        ApiKey.revoked_at.between(since, now) | ApiKey.grace_ends_at.between(since, now)
                        | ApiKey.expires_at.between(since, now)))
                for row in (await s.scalars(recent_removals)).all():
                    cache.note_removed(row)

    async def start(self) -> None:
        self.last_reconcile_ms = int(self.clock() * 1000)
        await self.load()

    async def reconcile(self, since_ms: int) -> int:
        """Reapply rows changed since ``since_ms`` (tenants too: new ones and,
        e.g., a shard count raised by the CLI or another replica)."""
        known = list(self.cache.tenants) or [""]
        async with self.sessions() as s:
            changed = select(Tenant).where(Tenant.id.not_in(known) | (Tenant.changed_at >= since_ms))
            for tenant in (await s.scalars(changed)).all():
                self.cache.set_tenant(tenant)
            # first ids only (streamed: after a bulk change, or a start right after
            # one, this is every key), then the rows not already cached as minted
            # here, a chunk at a time: all the rows at once would be a peak the
            # process keeps
            changed_keys = await s.stream(select(ApiKey.id, ApiKey.changed_at)
                                          .where(ApiKey.changed_at >= since_ms).execution_options(yield_per=2000))
            current = self._current
            stale = [kid async for kid, at in changed_keys if current.get(kid) != at]
            self._current = current = {kid: at for kid, at in current.items() if at >= since_ms}
            stale.sort()  # by kid: a chunk's new keys are appended to their documents
            applied = 0
            for i in range(0, len(stale), _CHUNK):
                chunk = select(ApiKey).where(ApiKey.id.in_(stale[i:i + _CHUNK])).order_by(ApiKey.id)
                for row in await s.scalars(chunk):
                    applied += self.cache.apply(row, loading=True)
                    current[row.id] = row.changed_at
            subjects = await s.scalars(select(SubjectLimits).where(SubjectLimits.changed_at >= since_ms))
            return applied + sum(1 for row in subjects if self.cache.apply_subject(row))

    async def refresh_key(self, tenant_id: str, kid: str) -> None:
        """A change notice from another replica: reread that one row."""
        async with self.sessions() as s:
            row = await s.get(ApiKey, kid)
            if row is None:
                return
            if row.tenant_id not in self.cache.tenants:
                tenant = await s.get(Tenant, row.tenant_id)
                if tenant is not None:
                    self.cache.set_tenant(tenant)
            self.cache.apply(row)

    async def refresh_subject(self, tenant_id: str, subject: str) -> None:
        """A subject-limits notice from another replica (or the CLI): reread its row."""
        async with self.sessions() as s:
            row = await s.get(SubjectLimits, (tenant_id, subject))
        if row is None:
            self.cache.forget_subject(tenant_id, subject)
        else:
            self.cache.apply_subject(row)

    async def refresh_tenant(self, tenant_id: str) -> None:
        """A tenant change notice from another replica (or the CLI): reread its row."""
        async with self.sessions() as s:
            tenant = await s.get(Tenant, tenant_id)
            if tenant is not None:
                self.cache.set_tenant(tenant)

    async def rebuild_cache(self) -> None:
        """Load everything into a new cache, then swap it in."""
        fresh = KeyCache(self.clock, self.cache.push_window, self.cache.recent_window)
        await self.load(fresh)
        self.cache.replace_with(fresh)

    async def on_subscribed(self, resubscribed: bool) -> None:
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
        changed = await self.reconcile(self.last_reconcile_ms - _OVERLAP_MS)
        self.last_reconcile_ms = started
        return changed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval)
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
                self.on_reconcile_failure()
