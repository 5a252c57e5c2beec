"""KeyCache.set_tenant on a tenant it already serves (issue 16 item 4): the
info (shard count) changes, the published keys and rendered JWKS stay."""

from __future__ import annotations

import keys
from authserver.db.models import ApiKey, Tenant
from authserver.keycache import KeyCache

NOW = 1_700_000_000.0


def tenant_row(shard_count: int = 1) -> Tenant:
    return Tenant(
        id="acme", issuer="https://auth.test/t/acme", audience="api://acme",
        admin_audience="https://auth.test/t/acme/admin", key_prefix="sk_live_", algorithm="EdDSA",
        sentinel_jwk=keys.sentinel_jwk("EdDSA"), created_at=int(NOW), shard_count=shard_count,
        changed_at=int(NOW * 1000),
    )


def key_row(tenant: Tenant) -> tuple[ApiKey, keys.MintedKey]:
    minted = keys.mint({"iss": tenant.issuer, "aud": tenant.audience}, algorithm="EdDSA",
                       prefix=tenant.key_prefix, clock=lambda: NOW)
    row = ApiKey(
        id=minted.kid, tenant_id=tenant.id, kind="api", name="k", subject=minted.kid, scopes=[],
        prefix=minted.prefix, last4=minted.key[-4:], algorithm="EdDSA", public_jwk=minted.public_jwk,
        meta={}, rate_limits=None, created_at=int(NOW), expires_at=None, revoked_at=None,
        grace_ends_at=None, changed_at=int(NOW * 1000), shard=None,
    )
    return row, minted


def test_set_tenant_on_a_live_tenant_keeps_its_keys_and_jwks() -> None:
    cache = KeyCache(lambda: NOW)
    row = tenant_row()
    tk = cache.set_tenant(row)
    key, minted = key_row(row)
    assert cache.apply(key)
    before = tk.jwks()
    assert minted.kid in before.body.decode()
    assert not tk.has_shard(1)

    grown = tenant_row(shard_count=4)
    grown.sentinel_jwk = row.sentinel_jwk
    again = cache.set_tenant(grown)

    assert again is tk and cache.get("acme") is tk
    assert tk.info.shard_count == 4 and tk.shard_ids() == [None, 0, 1, 2, 3]
    assert all(tk.has_shard(n) for n in range(4)) and not tk.has_shard(4)
    assert tk.least_loaded_shard() in range(4)  # new keys go into a shard now
    after = tk.jwks()
    assert (after.body, after.etag) == (before.body, before.etag)  # same bytes, same ETag
    verified, published = tk.verify_api(minted.key)  # the existing key still verifies
    assert verified.kid == published.kid == minted.kid


def test_set_tenant_with_an_unchanged_row_changes_nothing() -> None:
    cache = KeyCache(lambda: NOW)
    row = tenant_row(shard_count=2)
    tk = cache.set_tenant(row)
    info = tk.info
    assert cache.set_tenant(row) is tk and tk.info is info
