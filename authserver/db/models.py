"""Tables. None holds anything secret: a full dump cannot forge a key.

Timestamps are integer UNIX seconds (UTC): they are compared with JWT claims
that are UNIX seconds too, and behave the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONType = JSON().with_variant(JSONB(), "postgresql")

# "pending": a pre-published public key that no token uses yet (services/prepublish.py)
KeyKind = Literal["api", "admin", "pending"]


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # slug, in URLs
    issuer: Mapped[str] = mapped_column(String(512))
    audience: Mapped[str] = mapped_column(String(512))  # what gateways accept
    admin_audience: Mapped[str] = mapped_column(String(512))  # what the management API accepts
    key_prefix: Mapped[str] = mapped_column(String(80))
    algorithm: Mapped[str] = mapped_column(String(16))
    # public half only; its private half was discarded at creation
    sentinel_jwk: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[int] = mapped_column(BigInteger)
    shard_count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # epoch ms of the last change: the reconcile loop rereads tenants changed since
    changed_at: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # live API key cap: None follows AUTHSERVER_MAX_LIVE_KEYS_PER_TENANT, 0 is no cap
    max_live_keys: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # never below the tenant's live API keys: each mint and roll adds one under
    # the tenant's row lock; recounted exactly only when it reaches the cap
    live_keys_bound: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # what a leak reported by a secret scanner does to the key: revoke | notify (services/leaks.py)
    leak_policy: Mapped[str] = mapped_column(String(8), default="revoke", server_default="revoke")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # = kid = jti
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[KeyKind] = mapped_column(String(8))
    name: Mapped[str | None] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(256))
    scopes: Mapped[list[str]] = mapped_column(JSONType)
    prefix: Mapped[str] = mapped_column(String(80))
    last4: Mapped[str] = mapped_column(String(4))
    algorithm: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONType)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType)
    rate_limits: Mapped[list[dict[str, int]] | None] = mapped_column(JSONType)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)  # the token's exp claim
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    # rolling: the old key stays published until grace_ends_at
    grace_ends_at: Mapped[int | None] = mapped_column(BigInteger)
    rolled_from: Mapped[str | None] = mapped_column(String(64))
    rolled_to: Mapped[str | None] = mapped_column(String(64))
    # milliseconds; replicas and the CLI find recent changes by it
    changed_at: Mapped[int] = mapped_column(BigInteger, index=True)
    shard: Mapped[int | None] = mapped_column(Integer)  # None: the main JWKS
    # when its public key first appeared in the JWKS (earlier than created_at
    # for a pre-published key): gateways accept it one cache period later
    published_at: Mapped[int | None] = mapped_column(BigInteger)
    # the last call a gateway reported (access logs, written in batches)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger)
    # credits (authserver/credits.py): None = not counted; spent by gateways' calls
    credits_remaining: Mapped[int | None] = mapped_column(BigInteger)
    credits_refill_amount: Mapped[int | None] = mapped_column(BigInteger)
    credits_refill_interval: Mapped[str | None] = mapped_column(String(8))  # day | month
    credits_refilled_at: Mapped[int | None] = mapped_column(BigInteger)  # start of the period last refilled

    __table_args__ = (
        Index("ix_api_keys_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_api_keys_tenant_subject", "tenant_id", "subject"),
    )

    def removed_at(self) -> int | None:
        """When the key leaves the JWKS (revocation, expiry or end of grace)."""
        times = [t for t in (self.revoked_at, self.expires_at, self.grace_ends_at) if t is not None]
        return min(times) if times else None

    def state(self, now: float) -> str:
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.grace_ends_at is not None:
            return "rolled" if self.grace_ends_at <= now else "rolling"
        return "active"

    def is_published(self, now: float) -> bool:
        removed = self.removed_at()
        return removed is None or removed > now


class KeyUsage(Base):
    """Calls gateways reported per key and hour, by status class (never the key string)."""

    __tablename__ = "key_usage"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # UNIX seconds, start of the hour
    tenant_id: Mapped[str] = mapped_column(String(64))
    s2xx: Mapped[int] = mapped_column(BigInteger, default=0)
    s3xx: Mapped[int] = mapped_column(BigInteger, default=0)
    s4xx: Mapped[int] = mapped_column(BigInteger, default=0)
    s5xx: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_key_usage_tenant_hour", "tenant_id", "hour"),)


class AuditEvent(Base):
    """Append-only: the service only ever inserts here."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(128))  # admin key id, or "cli"
    action: Mapped[str] = mapped_column(String(32))  # key.mint, key.roll, key.revoke, tenant.create
    target: Mapped[str | None] = mapped_column(String(64))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType)
