"""KeyCache.verify_admin trusts a token it verified recently without checking
its signature again, but never past what can change: a revoked or expired
admin key fails at its next call."""

from __future__ import annotations

import pytest
from test_keycache_tenant import NOW, tenant_row

import keys
from authserver.db.models import ApiKey
from authserver.keycache import KeyCache


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def admin_row(tenant_id: str, issuer: str, audience: str, expires_in: int | None = None) -> tuple[ApiKey, str]:
    claims = {"iss": issuer, "aud": audience, "scope": "keys:read"}
    if expires_in:
        claims["exp"] = int(NOW) + expires_in
    minted = keys.mint(claims, algorithm="EdDSA", prefix="sk_admin_", clock=lambda: NOW)
    row = ApiKey(
        id=minted.kid, tenant_id=tenant_id, kind="admin", name="a", subject=minted.kid, scopes=["keys:read"],
        prefix="sk_admin_", last4=minted.key[-4:], algorithm="EdDSA", public_jwk=minted.public_jwk, meta={},
        rate_limits=None, created_at=int(NOW), expires_at=claims.get("exp"), revoked_at=None, grace_ends_at=None,
        changed_at=int(NOW * 1000), shard=None,
    )
    return row, minted.key


@pytest.fixture
def setup():
    clock = Clock()
    cache = KeyCache(clock)
    tenant = tenant_row()
    tk = cache.set_tenant(tenant)
    return clock, cache, tk, tenant


def test_a_revoked_admin_key_fails_at_once_after_a_verified_call(setup) -> None:
    clock, cache, tk, tenant = setup
    row, token = admin_row(tenant.id, tenant.issuer, tenant.admin_audience)
    cache.apply(row)
    assert cache.verify_admin(token)[1].kid == row.id
    assert cache.verify_admin(token)[0] is tk  # the second call is answered from what the first verified
    row.revoked_at = int(clock.now)
    cache.apply(row)
    with pytest.raises(keys.KeyCoreError):
        cache.verify_admin(token)


def test_an_admin_key_fails_at_its_exp_after_a_verified_call(setup) -> None:
    clock, cache, _, tenant = setup
    row, token = admin_row(tenant.id, tenant.issuer, tenant.admin_audience, expires_in=30)
    cache.apply(row)
    cache.verify_admin(token)
    clock.now += 29
    cache.verify_admin(token)
    clock.now += 1
    with pytest.raises(keys.KeyCoreError):
        cache.verify_admin(token)


def test_a_tampered_token_is_never_taken_for_a_verified_one(setup) -> None:
    _, cache, _, tenant = setup
    row, token = admin_row(tenant.id, tenant.issuer, tenant.admin_audience)
    cache.apply(row)
    cache.verify_admin(token)
    with pytest.raises(keys.KeyCoreError):
        cache.verify_admin(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))


def test_a_clock_set_back_verifies_again(setup) -> None:
    """iat held when the token verified, so at any later time; not at an earlier one."""
    clock, cache, _, tenant = setup
    row, token = admin_row(tenant.id, tenant.issuer, tenant.admin_audience)
    cache.apply(row)
    cache.verify_admin(token)
    clock.now -= 120  # beyond the allowed skew: the token is from the future now
    with pytest.raises(keys.KeyCoreError):
        cache.verify_admin(token)
