"""Migration 0005: tenants.max_live_keys (no override for existing tenants)
and tenants.live_keys_bound, started at the tenant's API keys not revoked;
downgrade drops both again."""

from __future__ import annotations

import asyncio

from _server_helpers import execute_sql, tenants_table


def _key(kid: str, tenant: str, kind: str = "api", revoked_at: str = "NULL") -> str:
    return ("INSERT INTO api_keys (id, tenant_id, kind, name, subject, scopes, prefix, last4, algorithm, public_jwk, "
            "metadata, rate_limits, created_at, expires_at, revoked_at, grace_ends_at, rolled_from, rolled_to, "
            f"changed_at, shard, published_at) VALUES ('{kid}', '{tenant}', '{kind}', NULL, 's', '[]', 'sk_live_', "
            f"'abcd', 'EdDSA', '{{}}', '{{}}', NULL, 1700000000, NULL, {revoked_at}, NULL, NULL, NULL, 0, NULL, NULL)")


async def test_migration_0005_adds_the_live_key_quota_columns_and_downgrades(database_url):
    from alembic import command

    from authserver.db.migrate import alembic_config, upgrade_async
    from authserver.db.models import Tenant

    await upgrade_async(database_url, "0004")
    for tenant in ("acme", "empty"):
        await execute_sql(database_url, "INSERT INTO tenants (id, issuer, audience, admin_audience, key_prefix, "
                                        "algorithm, sentinel_jwk, created_at, shard_count, changed_at) VALUES "
                                        f"('{tenant}', 'i', 'a', 'aa', 'sk_live_', 'EdDSA', '{{}}', 1700000000, 1, 0)")
    for sql in (_key("k1", "acme"), _key("k2", "acme"), _key("k3", "acme", revoked_at="1700000001"),
                _key("adm", "acme", kind="admin"), _key("pend", "acme", kind="pending")):
        await execute_sql(database_url, sql)

    await upgrade_async(database_url)
    columns, rows = await tenants_table(database_url)
    assert columns == [c.name for c in Tenant.__table__.columns]  # the model and the migrated schema agree
    by_id = {r["id"]: r for r in rows}
    assert by_id["acme"]["live_keys_bound"] == 2 and by_id["acme"]["max_live_keys"] is None
    assert by_id["empty"]["live_keys_bound"] == 0 and by_id["empty"]["max_live_keys"] is None

    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0004")
    columns, rows = await tenants_table(database_url)
    assert "max_live_keys" not in columns and "live_keys_bound" not in columns and len(rows) == 2
    await upgrade_async(database_url)
    assert "live_keys_bound" in (await tenants_table(database_url))[0]
