"""Migration 0004: tenants.changed_at (the reconcile loop rereads changed
tenants). Existing rows get their creation time; downgrade drops it again."""

from __future__ import annotations

import asyncio

from _server_helpers import execute_sql, tenants_table


async def test_migration_0004_adds_tenant_changed_at_and_downgrades(database_url):
    from alembic import command

    from authserver.db.migrate import alembic_config, upgrade_async
    from authserver.db.models import Tenant

    await upgrade_async(database_url, "0003")
    await execute_sql(database_url, "INSERT INTO tenants (id, issuer, audience, admin_audience, key_prefix, algorithm, "
                                 "sentinel_jwk, created_at, shard_count) VALUES ('acme', 'i', 'a', 'aa', 'sk_live_', "
                                 "'EdDSA', '{}', 1700000000, 2)")

    await upgrade_async(database_url)
    columns, rows = await tenants_table(database_url)
    assert columns == [c.name for c in Tenant.__table__.columns]  # the model and the migrated schema agree
    assert rows[0]["changed_at"] == 1_700_000_000_000 and rows[0]["shard_count"] == 2  # ms, from created_at

    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0003")
    columns, rows = await tenants_table(database_url)
    assert "changed_at" not in columns and rows[0]["id"] == "acme" and rows[0]["shard_count"] == 2
    await upgrade_async(database_url)
    assert "changed_at" in (await tenants_table(database_url))[0]
