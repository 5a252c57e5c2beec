"""Instant activation (opt-in): publish keys before they are issued.

Gateways do not refetch the JWKS on an unknown kid, so a freshly minted key
fails until their next refresh (Envoy's cache_duration). Here each tenant has
a pool of keypairs whose *public* halves are published at once, as rows of
kind "pending" (public JWK only; every replica serves them). A mint takes the
oldest keypair whose public half has been out longer than the gateway cache
duration: the gateway already has it, so the key works at its first call.

Trade-off, documented in the README: those private halves live in this
process's memory until issued or evicted (after ``max_age``). They are never
written anywhere, so a crash loses them: a pending row's expires_at is a
lease its replica renews every third of ``lease`` seconds. When a replica
dies (kill -9) its leases run out, and every replica's cache drops those keys
from the JWKS at that time by itself (as it does any expiry; no message, no
owner needed); the next prepublish pass anywhere deletes the rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import keys
import keys.hazmat

from ..db.models import ApiKey
from ..keycache import KeyCache
from .common import Publisher, tenant_of

__all__ = ["Prepublished", "Prepublisher"]

log = logging.getLogger("authserver.prepublish")


@dataclass(frozen=True, slots=True)
class Prepublished:
    """A key minted with a keypair whose public half is already out."""

    minted: keys.MintedKey
    shard: int | None
    published_at: int  # when its pending row was written

    async def claim(self, session: AsyncSession) -> None:
        """In the mint's transaction: the pending row gives way to the key's row."""
        await session.execute(delete(ApiKey).where(ApiKey.id == self.minted.kid, ApiKey.kind == "pending"))


class Prepublisher:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], cache: KeyCache, publisher: Publisher,
        refill_executor: Executor, *, pool_size: int, max_age: float, min_age: float, lease: float = 60.0,
        owner: str = "", clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessions = sessions
        self.cache = cache
        self.publisher = publisher
        self.refill_executor = refill_executor
        self.pool_size = pool_size
        self.max_age = max_age
        self.min_age = min_age  # gateway cache duration plus a margin
        self.clock = clock
        self.pools: dict[str, keys.hazmat.KeypairPool] = {}
        self.published: set[str] = set()  # kids whose pending row is committed
        self._wake = asyncio.Event()
        self.lease = lease
        self.owner = owner  # replica id, recorded on its pending rows (for operators)
        self.leased_until = 0.0  # every pending row of ours is published until then, on every replica

    def pool(self, tenant_id: str) -> keys.hazmat.KeypairPool:
        pool = self.pools.get(tenant_id)
        if pool is None:
            algorithm = tenant_of(self.cache, tenant_id).info.algorithm
            pool = self.pools[tenant_id] = keys.hazmat.KeypairPool(algorithm, self.pool_size, self.max_age, self.clock)
        return pool

    def take(self, tenant_id: str, claims: Mapping[str, Any], algorithm: str) -> keys.MintedKey | None:
        """Mint with a pre-published keypair, or None. Prefers one older than
        the gateway cache; else any published one (it is at least out)."""
        tk = self.cache.get(tenant_id)
        pool = self.pools.get(tenant_id)
        if tk is None or pool is None or pool.algorithm.name != algorithm:
            return None
        if not self.leased():
            return None  # renewals failing: our keys may leave the JWKS before a gateway fetches it
        self._wake.set()

        def prefix_for(kid: str) -> str:
            pending = tk.published.get(kid)
            return tk.info.shard_prefix(pending.shard if pending else None)

        accept = self.published.__contains__
        minted = (pool.mint(claims, prefix=prefix_for, min_age=self.min_age, accept=accept, clock=self.clock)
                  or pool.mint(claims, prefix=prefix_for, accept=accept, clock=self.clock))
        if minted is not None:
            self.published.discard(minted.kid)
        return minted

    async def issue(self, tenant_id: str, claims: Mapping[str, Any], algorithm: str) -> Prepublished | None:
        """A pre-published key for these claims, or None (mint a fresh one then)."""
        minted = self.take(tenant_id, claims, algorithm)
        if minted is None:
            return None
        pending = tenant_of(self.cache, tenant_id).published.get(minted.kid)
        async with self.sessions() as s:
            row = await s.get(ApiKey, minted.kid)
        since = row.created_at if row is not None and row.kind == "pending" else int(self.clock())
        return Prepublished(minted, pending.shard if pending is not None else None, since)

    async def run(self) -> None:
        await asyncio.gather(self._refill_loop(), self._renew_loop())

    def leased(self) -> bool:
        """Whether our pending rows are surely published for a while yet
        (renewals succeed): only then are they issued, or new ones added."""
        return self.leased_until - self.clock() >= self.lease / 3

    async def _renew_loop(self) -> None:
        # apart from the refill: generating RSA keypairs must not delay a renewal
        while True:
            if self.clock() >= self.leased_until - self.lease * 2 / 3:  # a third of the lease has passed
                try:
                    await self.renew_leases()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # database down: leases run out, take() stops using them
                    log.warning("could not renew pre-published keys: %s", type(exc).__name__)
            await asyncio.sleep(min(1.0, self.lease / 3))

    async def renew_leases(self) -> None:
        """Extend the lease of every pending row of ours. A row whose lease ran
        out meanwhile (renewals failed) may have left other replicas' JWKS:
        its keypair is discarded, not revived."""
        now = self.clock()
        until = int(now + self.lease)
        kids = list(self.published)
        renewed: list[ApiKey] = []
        for i in range(0, len(kids), 500):
            chunk = kids[i:i + 500]
            async with self.sessions() as s, s.begin():
                await s.execute(
                    update(ApiKey)
                    .where(ApiKey.id.in_(chunk), ApiKey.kind == "pending", ApiKey.expires_at > now)
                    .values(expires_at=until, changed_at=int(now * 1000))
                    .execution_options(synchronize_session=False)
                )
                renewed += (await s.scalars(select(ApiKey).where(
                    ApiKey.id.in_(chunk), ApiKey.kind == "pending", ApiKey.expires_at == until))).all()
        lapsed = (set(kids) - {r.id for r in renewed}) & self.published  # not those issued meanwhile
        if lapsed:
            self.published.difference_update(lapsed)
            for pool in self.pools.values():
                pool.discard(lapsed)
            log.warning("dropped %d pre-published keys whose lease ran out", len(lapsed))
        self.leased_until = until
        for row in renewed:
            if row.id in self.published:  # not issued since (its key row is published instead)
                await self.publisher.publish(row)

    async def _refill_loop(self) -> None:
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
            except TimeoutError:
                pass

    async def _refill_all(self) -> None:
        for tenant_id in list(self.cache.tenants):
            pool = self.pool(tenant_id)
            gone = pool.evict()
            if gone:
                self.published.difference_update(gone)
                await self._drop_pending(tenant_id, gone)
            while pool.needed() and self.leased():  # publish nothing we cannot keep published
                jwk = await asyncio.get_running_loop().run_in_executor(self.refill_executor, pool.fill_one)
                if jwk is None:
                    break
                await self._add_pending(tenant_id, jwk)
                self.published.add(jwk["kid"])
        await self._delete_expired_pending()

    async def _add_pending(self, tenant_id: str, jwk: dict[str, Any]) -> None:
        """Publish the public half of a pooled keypair, leased like the others."""
        tk = tenant_of(self.cache, tenant_id)
        now = int(self.clock())
        shard = tk.least_loaded_shard()
        row = ApiKey(
            id=jwk["kid"], tenant_id=tenant_id, kind="pending", name=None, subject="", scopes=[],
            prefix=tk.info.shard_prefix(shard), last4="", algorithm=jwk["alg"], public_jwk=keys.public_only(jwk),
            meta={"owner": self.owner}, rate_limits=None, created_at=now, revoked_at=None, grace_ends_at=None,
            expires_at=int(self.leased_until),  # the lease: renewed until issued, evicted or we die
            rolled_from=None, rolled_to=None, changed_at=int(self.clock() * 1000), shard=shard, published_at=now,
        )
        async with self.sessions() as s, s.begin():
            s.add(row)
        await self.publisher.publish(row)

    async def _drop_pending(self, tenant_id: str, kids: list[str]) -> None:
        """Unpublish evicted pooled keys: their private halves are gone."""
        async with self.sessions() as s, s.begin():
            rows = (await s.scalars(select(ApiKey).where(ApiKey.id.in_(kids), ApiKey.kind == "pending"))).all()
            for row in rows:
                row.revoked_at = int(self.clock())
                row.changed_at = int(self.clock() * 1000)
        for row in rows:
            await self.publisher.publish(row)

    async def _delete_expired_pending(self) -> None:
        """Pending rows past their lease (evicted, or orphaned by a crash)."""
        now = int(self.clock())
        async with self.sessions() as s, s.begin():
            await s.execute(delete(ApiKey).where(ApiKey.kind == "pending", ApiKey.expires_at <= now))
