"""Helpers that act on the service directly, the way the CLI does."""

from __future__ import annotations


async def create_tenant(settings, tenant_id: str = "default", **kwargs):
    """Create a tenant the way the CLI does (own engine, this event loop)."""
    from authserver.offline import open_core

    async with open_core(settings) as core:
        info, admin = await core.tenants.create_tenant(tenant_id, **kwargs)
    return info, admin.key
