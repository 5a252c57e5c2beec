"""``KeyService``: the service API the HTTP API, the portal and the CLI call.

It only hands each call to the service that does that job; it holds no state
of its own and is built once, in ``Core.build``.
"""

from __future__ import annotations

from typing import Any

import keys

from ..db.models import ApiKey, AuditEvent, Tenant
from ..keycache import TenantInfo, TenantKeys
from ..schemas import KeySpec
from .common import Actor
from .introspection import Introspector
from .lifecycle import KeyLifecycle
from .prepublish import Prepublisher
from .queries import KeyQueries, Page
from .sync import CacheSync
from .tenants import TenantService

__all__ = ["KeyService"]

_CLI = Actor("cli")


class KeyService:
    def __init__(self, tenants: TenantService, lifecycle: KeyLifecycle, queries: KeyQueries,
                 introspector: Introspector, sync: CacheSync) -> None:
        self.tenants = tenants
        self.lifecycle = lifecycle
        self.queries = queries
        self.introspector = introspector
        self.sync = sync

    @property
    def prepublisher(self) -> Prepublisher | None:
        return self.lifecycle.instant

    # tenants
    def tenant(self, tenant_id: str) -> TenantKeys:
        return self.tenants.tenant(tenant_id)

    async def all_tenants(self) -> list[Tenant]:
        return await self.tenants.all_tenants()

    async def create_tenant(self, tenant_id: str, *, audience: str | None = None, key_prefix: str = "sk_live_",
                            algorithm: str | None = None, actor: Actor = _CLI) -> tuple[TenantInfo, keys.MintedKey]:
        return await self.tenants.create_tenant(tenant_id, audience=audience, key_prefix=key_prefix,
                                                algorithm=algorithm, actor=actor)

    async def set_shard_count(self, tenant_id: str, count: int, actor: Actor = _CLI) -> TenantInfo:
        return await self.tenants.set_shard_count(tenant_id, count, actor)

    # lifecycle
    async def mint(self, tenant_id: str, spec: KeySpec, actor: Actor, *,
                   kind: str = "api") -> tuple[ApiKey, keys.MintedKey]:
        return await self.lifecycle.mint(tenant_id, spec, actor, kind=kind)

    async def roll(self, tenant_id: str, kid: str, actor: Actor, *, grace_seconds: int | None = None,
                   expires_in: int | None = None) -> tuple[ApiKey, keys.MintedKey, ApiKey]:
        return await self.lifecycle.roll(tenant_id, kid, actor, grace_seconds=grace_seconds, expires_in=expires_in)

    async def revoke(self, tenant_id: str, kid: str, actor: Actor, *, kind: str = "api") -> ApiKey:
        return await self.lifecycle.revoke(tenant_id, kid, actor, kind=kind)

    async def record(self, tenant_id: str, actor: Actor, action: str, target: str | None = None,
                     details: dict[str, Any] | None = None) -> None:
        await self.lifecycle.record(tenant_id, actor, action, target, details)

    # queries
    async def get(self, tenant_id: str, kid: str, *, kind: str = "api") -> ApiKey:
        return await self.queries.get(tenant_id, kid, kind=kind)

    async def list_keys(self, tenant_id: str, *, state: str = "all", limit: int = 50, cursor: str | None = None,
                        subject: str | None = None, search: str | None = None, kind: str = "api") -> Page:
        return await self.queries.list_keys(tenant_id, state=state, limit=limit, cursor=cursor, subject=subject,
                                            search=search, kind=kind)

    async def audit(self, tenant_id: str, *, limit: int = 100, before_id: int | None = None) -> list[AuditEvent]:
        return await self.queries.audit(tenant_id, limit=limit, before_id=before_id)

    # introspection
    async def introspect(self, tenant_id: str, token: str) -> dict[str, Any]:
        return await self.introspector.introspect(tenant_id, token)

    # the cache
    async def load(self) -> None:
        await self.sync.load()
