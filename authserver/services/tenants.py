"""Tenants: create one (with its first admin key), grow its shards."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import keys

from ..db.models import Tenant
from ..errors import Conflict, InvalidInput, NotFound
from ..keycache import KeyCache, TenantInfo, TenantKeys
from ..schemas import ADMIN_SCOPES, ALGORITHM_NAMES, KeySpec
from ..settings import Settings
from .common import ADMIN_PREFIX, Actor, audit_event, tenant_of
from .keygen import KeyGenerator
from .leaks import LEAK_POLICIES
from .lifecycle import KeyLifecycle
from .quota import count_live_keys, live_key_limit

__all__ = ["TENANT_ID", "Quota", "TenantNotifier", "TenantService", "no_tenant_notice"]

TENANT_ID = re.compile(r"\A[a-z0-9][a-z0-9-]{0,62}\Z")
MAX_SHARDS = 4096
_CLI = Actor("cli")
TenantNotifier = Callable[[str], Awaitable[None]]  # (tenant_id): tell the other replicas


async def no_tenant_notice(tenant_id: str) -> None:
    """No Redis: the other replicas reread the tenant within their reconcile interval."""


@dataclass(frozen=True, slots=True)
class Quota:
    tenant: str
    limit: int  # in force; 0: none
    override: int | None  # the tenant's own; None: the server's AUTHSERVER_MAX_LIVE_KEYS_PER_TENANT
    live: int  # live API keys now


class TenantService:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], cache: KeyCache,
                 keygen: KeyGenerator, lifecycle: KeyLifecycle, clock: Callable[[], float] = time.time,
                 notify: TenantNotifier = no_tenant_notice) -> None:
        self.settings = settings
        self.sessions = sessions
        self.cache = cache
        self.keygen = keygen
        self.lifecycle = lifecycle  # mints the first admin key
        self.clock = clock
        self.notify = notify

    def tenant(self, tenant_id: str) -> TenantKeys:
        return tenant_of(self.cache, tenant_id)

    async def all_tenants(self) -> list[Tenant]:
        async with self.sessions() as s:
            return list((await s.scalars(select(Tenant).order_by(Tenant.id))).all())

    async def create_tenant(
        self, tenant_id: str, *, audience: str | None = None, key_prefix: str = "sk_live_",
        algorithm: str | None = None, actor: Actor = _CLI,
    ) -> tuple[TenantInfo, keys.MintedKey]:
        """Create a tenant and its first admin key (returned once)."""
        row = await self._new_row(tenant_id, audience, key_prefix, algorithm)
        async with self.sessions() as s:
            try:
                async with s.begin():
                    s.add(row)
                    s.add(audit_event(row.id, actor, "tenant.create", None, {"audience": row.audience}, self.clock()))
            except IntegrityError:
                raise Conflict("a tenant with this id exists") from None
        self.cache.set_tenant(row)
        await self.notify(row.id)
        spec = KeySpec(name="admin", scopes=list(ADMIN_SCOPES))
        _, admin = await self.lifecycle.mint(row.id, spec, actor, kind="admin")
        return TenantInfo.from_row(row), admin

    async def _new_row(self, tenant_id: str, audience: str | None, key_prefix: str, algorithm: str | None) -> Tenant:
        if not TENANT_ID.match(tenant_id or ""):
            raise InvalidInput("tenant id: 1-63 of a-z, 0-9 and '-', starting with a letter or digit")
        try:
            keys.validate_prefix(key_prefix)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if key_prefix == ADMIN_PREFIX:
            raise InvalidInput(f"{ADMIN_PREFIX!r} is reserved for admin keys")
        algorithm = algorithm or self.settings.default_algorithm
        if algorithm not in ALGORITHM_NAMES:
            raise InvalidInput(f"algorithm must be one of {list(ALGORITHM_NAMES)}")
        issuer = f"{self.settings.base_url}/t/{tenant_id}"
        audience = audience or f"api://{tenant_id}"
        if audience == f"{issuer}/admin":
            raise InvalidInput("the audience must differ from the admin audience")
        return Tenant(
            id=tenant_id, issuer=issuer, audience=audience, admin_audience=f"{issuer}/admin",
            key_prefix=key_prefix, algorithm=algorithm, sentinel_jwk=await self.keygen.sentinel(),
            created_at=int(self.clock()), changed_at=self._now_ms(),
        )

    async def set_shard_count(self, tenant_id: str, count: int, actor: Actor = _CLI) -> TenantInfo:
        """Spread new keys over ``count`` JWKS shards. Shards only grow: a key
        keeps the shard in its prefix for life, so nothing is re-issued."""
        tk = self.tenant(tenant_id)
        if not (1 <= count <= MAX_SHARDS):
            raise InvalidInput(f"shard count must be between 1 and {MAX_SHARDS}")
        if count < tk.info.shard_count:
            raise Conflict("shards can only grow: existing keys carry their shard in their prefix")
        try:
            keys.validate_prefix(tk.info.shard_prefix(count - 1))
        except ValueError:
            raise InvalidInput("the tenant prefix has no room for a shard group (at most 3 groups)") from None
        async with self.sessions() as s, s.begin():
            row = await s.get(Tenant, tenant_id, with_for_update=True)
            if row is None:
                raise NotFound("no such tenant")
            row.shard_count = count
            row.changed_at = self._now_ms()
            s.add(audit_event(tenant_id, actor, "tenant.shards", None, {"shard_count": count}, self.clock()))
        self.cache.set_tenant(row)
        await self.notify(tenant_id)
        return TenantInfo.from_row(row)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- undoing a creation nobody saw ---------------------------------------

    async def discard_new(self, tenant_id: str) -> None:
        """Delete a tenant created moments ago whose first admin key never
        reached anyone (the CLI could not write it out): as if never created.
        Refused once the tenant has any other key."""
        from sqlalchemy import delete, func

        from ..db.models import ApiKey, AuditEvent

        async with self.sessions() as s, s.begin():
            count = await s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.tenant_id == tenant_id))
            if (count or 0) > 1:
                raise Conflict(f"tenant {tenant_id!r} has keys already; not discarded")
            await s.execute(delete(AuditEvent).where(AuditEvent.tenant_id == tenant_id))
            await s.execute(delete(ApiKey).where(ApiKey.tenant_id == tenant_id))
            await s.execute(delete(Tenant).where(Tenant.id == tenant_id))
        await self.notify(tenant_id)

    # --- the cap on live keys (services/quota.py) ---------------------------

    async def quota(self, tenant_id: str) -> Quota:
        async with self.sessions() as s:
            row = await s.get(Tenant, tenant_id)
            if row is None:
                raise NotFound(f"no such tenant: {tenant_id}")
            live = await count_live_keys(s, tenant_id, int(self.clock()))
        return Quota(tenant_id, live_key_limit(row, self.settings), row.max_live_keys, live)

    async def set_quota(self, tenant_id: str, max_live_keys: int | None, actor: Actor = _CLI) -> Quota:
        """Cap the tenant's live API keys (0: no cap; None: the server default).
        Every mint reads it from the tenant row: running replicas apply it at once.
        Keys over a lowered cap stay valid; new ones are refused until under it."""
        if max_live_keys is not None and not 0 <= max_live_keys <= 2**62:
            raise InvalidInput("the live key limit must be 0 (no limit) or a positive number")
        async with self.sessions() as s, s.begin():
            row = await s.get(Tenant, tenant_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no such tenant: {tenant_id}")
            row.max_live_keys = max_live_keys
            s.add(audit_event(tenant_id, actor, "tenant.quota", None, {"max_live_keys": max_live_keys}, self.clock()))
        return await self.quota(tenant_id)

    # --- what a leaked key's report does (services/leaks.py) ------------------

    async def leak_policy(self, tenant_id: str) -> str:
        async with self.sessions() as s:
            row = await s.get(Tenant, tenant_id)
        if row is None:
            raise NotFound(f"no such tenant: {tenant_id}")
        return row.leak_policy

    async def set_leak_policy(self, tenant_id: str, policy: str, actor: Actor = _CLI) -> str:
        """``revoke``: a key a secret scanner found in public is revoked at once;
        ``notify``: it stays valid and only the key.leaked event is recorded."""
        if policy not in LEAK_POLICIES:
            raise InvalidInput(f"the leak policy is one of {list(LEAK_POLICIES)}")
        async with self.sessions() as s, s.begin():
            row = await s.get(Tenant, tenant_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no such tenant: {tenant_id}")
            row.leak_policy = policy
            s.add(audit_event(tenant_id, actor, "tenant.leak_policy", None, {"leak_policy": policy}, self.clock()))
        return policy
