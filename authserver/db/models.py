"""Tables. None holds anything secret: a full dump cannot forge a key, nor a
webhook (their signing secrets are stored sealed, under a key kept elsewhere).

Timestamps are integer UNIX seconds (UTC): they are compared with JWT claims
that are UNIX seconds too, and behave the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

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
    # key.expiring webhooks fire this many days before a key's exp; None: 7
    key_expiring_days: Mapped[int | None] = mapped_column(Integer, default=None)
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


class SubjectLimits(Base):
    """Rate limits shared by every API key of one subject (the keys' ``sub``).

    A cleared subject keeps its row with ``rate_limits`` None until it is set
    again: the reconcile loop finds the change by ``changed_at`` like a set."""

    __tablename__ = "subject_limits"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    subject: Mapped[str] = mapped_column(String(256), primary_key=True)
    rate_limits: Mapped[list[dict[str, int]] | None] = mapped_column(JSONType)
    updated_at: Mapped[int] = mapped_column(BigInteger)  # UNIX seconds
    # milliseconds; replicas and the CLI find recent changes by it
    changed_at: Mapped[int] = mapped_column(BigInteger, index=True)


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


class PortalSignIn(Base):
    """A one-time consumer portal sign-in link (services/consumers.py): only the
    SHA-256 of its random token is kept, so a dump opens no portal session."""

    __tablename__ = "portal_sign_ins"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex SHA-256 of the URL's token
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(256))  # the consumer: sees only keys with this sub
    policy: Mapped[dict[str, Any]] = mapped_column(JSONType)  # max_keys, allowed_scopes, max_lifetime
    return_url: Mapped[str | None] = mapped_column(String(2048))
    created_by: Mapped[str] = mapped_column(String(128))  # the admin key id that asked for it, or "cli"
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[int | None] = mapped_column(BigInteger)  # set once: a second visit is refused

    __table_args__ = (Index("ix_portal_sign_ins_expires", "expires_at"),)


class PortalSessionRow(Base):
    """A portal session (portal/store.py), shared by every replica and worker.
    Keyed by the SHA-256 of the cookie's session id, so a dump opens none."""

    __tablename__ = "portal_sessions"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, index=True)  # unix ms; None: never


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


class WebhookEndpoint(Base):
    """Where a tenant wants its key events. The signing secret is sealed
    (keys.webhooks.SecretBox) under a key that is not in the database."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # ep_...
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(200))
    event_types: Mapped[list[str]] = mapped_column(JSONType)
    secret_sealed: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[int] = mapped_column(BigInteger)
    # removed endpoints stay for their delivery log; nothing more is sent to them
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)


class WebhookEvent(Base):
    """One event (its id is the webhook-id of every delivery of it). Nothing secret in the payload."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_...
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    type: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[int] = mapped_column(BigInteger)  # UNIX seconds: the webhook's timestamp field
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)


class WebhookDelivery(Base):
    """The outbox: one row per (event, endpoint) and per replay. Times in ms."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # dlv_...
    tenant_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))  # pending, delivered, failed, cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[int] = mapped_column(BigInteger)
    # a sender holds a delivery while it sends; another may take it once the lease ran out (a killed sender)
    lease_owner: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[int | None] = mapped_column(BigInteger)
    last_attempt_at: Mapped[int | None] = mapped_column(BigInteger)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(200))  # never the payload or a secret
    delivered_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    replay_of: Mapped[str | None] = mapped_column(String(40))
    # only so that one flush inserts an event before its deliveries; never loaded
    event: Mapped[WebhookEvent] = relationship(lazy="raise")

    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
    )


class KeyNotice(Base):
    """A periodic notice (key.expiring, key.grace_ending) already given for a
    key: the primary key makes it one per key and kind, whichever replica scans."""

    __tablename__ = "key_notices"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[int] = mapped_column(BigInteger)
