"""The cap on a tenant's live API keys (issue 16 item 7).

Counting every live key on every mint would cost a scan of the tenant's keys
per mint. Instead the tenant row keeps ``live_keys_bound``, never below the
live count: each mint and roll adds one under the tenant's row lock (SQLite:
its single writer), and keys that leave (revoked, expired, end of grace) are
only subtracted by an exact recount, done when the bound reaches the cap.
So the check is O(1) until a tenant is near its cap, and parallel mints on
any number of replicas cannot overshoot it.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import ApiKey, Tenant
from ..errors import NotFound, QuotaExceeded
from ..settings import Settings
from .queries import state_filter

__all__ = ["count_live_keys", "live_key_limit", "lock_tenant", "reserve_live_key"]


def live_key_limit(tenant: Tenant, settings: Settings) -> int:
    """The tenant's cap; 0 is none."""
    return settings.max_live_keys_per_tenant if tenant.max_live_keys is None else tenant.max_live_keys


async def count_live_keys(s: AsyncSession, tenant_id: str, now: int) -> int:
    live = state_filter("live", now)
    assert live is not None  # "live" always has a filter
    query = select(func.count()).select_from(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.kind == "api", live)
    return int((await s.execute(query)).scalar_one())


async def lock_tenant(s: AsyncSession, tenant_id: str) -> Tenant:
    """The tenant's row, locked until the transaction ends (first, so every
    writer takes the tenant lock before any key row lock)."""
    tenant = await s.get(Tenant, tenant_id, with_for_update=True, populate_existing=True)
    if tenant is None:
        raise NotFound(f"no such tenant: {tenant_id}")
    return tenant


async def reserve_live_key(s: AsyncSession, tenant: Tenant, settings: Settings, now: int) -> None:
    """Room for one more live key, in the transaction that adds it (``tenant``
    locked by lock_tenant), or QuotaExceeded."""
    limit = live_key_limit(tenant, settings)
    if limit and tenant.live_keys_bound >= limit:
        tenant.live_keys_bound = await count_live_keys(s, tenant.id, now)
        if tenant.live_keys_bound >= limit:
            raise QuotaExceeded(
                f"tenant {tenant.id!r} has reached its limit of {limit} live keys: revoke keys, or raise the "
                f"limit (authserver tenant quota {tenant.id} --max-live-keys N)", limit=limit,
            )
    tenant.live_keys_bound += 1
