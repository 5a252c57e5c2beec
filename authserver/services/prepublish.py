"""Instant activation (opt-in): publish keys before they are issued.

Gateways do not refetch the JWKS on an unknown kid, so a freshly minted key
fails until their next refresh (Envoy's cache_duration). Here each tenant has
a pool of keypairs whose *public* halves are published at once, as rows of
kind "pending" (public JWK only; every replica serves them). A mint takes the
oldest keypair whose public half has been out longer than the gateway cache
duration: the gateway already has it, so the key works at its first call.

Trade-off, documented in the README: those private halves live in this
process's memory until issued or evicted (after ``max_age``). They are never
written anywhere; a crash loses them, and their pending rows expire by
themselves (a pending row's expires_at is its eviction time).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Mapping

from sqlalchemy import delete

import keys
import keys.hazmat

from ..db.models import ApiKey

if TYPE_CHECKING:
    from .apikeys import KeyService

log = logging.getLogger("authserver.prepublish")


class Prepublisher:
    def __init__(self, service: "KeyService", *, pool_size: int, max_age: float, min_age: float) -> None:
        self.service = service
        self.pool_size = pool_size
        self.max_age = max_age
        self.min_age = min_age  # gateway cache duration plus a margin
        self.pools: dict[str, keys.hazmat.KeypairPool] = {}
        self.published: set[str] = set()  # kids whose pending row is committed
        self._wake = asyncio.Event()

    def pool(self, tenant_id: str) -> keys.hazmat.KeypairPool:
        pool = self.pools.get(tenant_id)
        if pool is None:
            algorithm = self.service.tenant(tenant_id).info.algorithm
            pool = self.pools[tenant_id] = keys.hazmat.KeypairPool(algorithm, self.pool_size, self.max_age,
                                                             self.service.clock)
        return pool

    def take(self, tenant_id: str, claims: Mapping[str, Any], algorithm: str) -> keys.MintedKey | None:
        """Mint with a pre-published keypair, or None. Prefers one older than
        the gateway cache; else any published one (it is at least out)."""
        tk = self.service.cache.get(tenant_id)
        pool = self.pools.get(tenant_id)
        if tk is None or pool is None or pool.algorithm.name != algorithm:
            return None
        self._wake.set()

        def prefix_for(kid: str) -> str:
            pending = tk.published.get(kid)
            return tk.info.shard_prefix(pending.shard if pending else None)

        accept = self.published.__contains__
        minted = (pool.mint(claims, prefix=prefix_for, min_age=self.min_age, accept=accept, clock=self.service.clock)
                  or pool.mint(claims, prefix=prefix_for, accept=accept, clock=self.service.clock))
        if minted is not None:
            self.published.discard(minted.kid)
        return minted

    async def run(self) -> None:
        while True:
            try:
                await self._refill_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down: pending rows wait
                log.warning("pre-publication paused: %s", type(exc).__name__)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass

    async def _refill_all(self) -> None:
        svc = self.service
        for tenant_id in list(svc.cache.tenants):
            pool = self.pool(tenant_id)
            gone = pool.evict()
            if gone:
                self.published.difference_update(gone)
                await svc.drop_pending(tenant_id, gone)
            while pool.needed():
                jwk = await asyncio.get_running_loop().run_in_executor(svc.keygen.refill_executor, pool.fill_one)
                if jwk is None:
                    break
                await svc.add_pending(tenant_id, jwk, expires_in=int(self.max_age))
                self.published.add(jwk["kid"])
        await self._delete_expired_pending()

    async def _delete_expired_pending(self) -> None:
        """Pending rows past their time (evicted, or orphaned by a crash)."""
        now = int(self.service.clock())
        async with self.service.sessions() as s, s.begin():
            await s.execute(delete(ApiKey).where(ApiKey.kind == "pending", ApiKey.expires_at <= now))
