"""How keys and audit events are shown: the JSON API, the portal and the CLI alike."""

from __future__ import annotations

from typing import Any

from ..db.models import ApiKey, AuditEvent, WebhookDelivery, WebhookEndpoint
from ..services.credits import Credits
from ..settings import Settings

__all__ = ["admin_key_view", "audit_view", "delivery_view", "key_view", "webhook_view"]


def admin_key_view(row: ApiKey, now: float) -> dict[str, Any]:
    """Public description of an admin key (never published to gateways, so no
    gateway, shard or metadata fields): never the key string itself."""
    return {
        "id": row.id,
        "kind": row.kind,
        "name": row.name,
        "scopes": list(row.scopes),
        "prefix": row.prefix,
        "last4": row.last4,
        "hint": f"{row.prefix}…{row.last4}",
        "algorithm": row.algorithm,
        "state": row.state(now),
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "grace_ends_at": row.grace_ends_at,
        "rolled_from": row.rolled_from,
        "rolled_to": row.rolled_to,
    }


def key_view(row: ApiKey, now: float, settings: Settings) -> dict[str, Any]:
    """Public description of an API key: what an admin key's says, and what
    gateways and usage add. Never the key string itself."""
    published_at = row.published_at or row.created_at
    return admin_key_view(row, now) | {
        "subject": row.subject,
        "shard": row.shard,
        "published_at": published_at,
        # gateways refetch the JWKS every gateway_cache_seconds and not on an unknown kid
        "gateway_accepts_after": published_at + settings.gateway_cache_seconds,
        "metadata": row.meta,
        "rate_limits": row.rate_limits,
        "last_used_at": row.last_used_at,  # the last call a gateway reported (batched: lags a few seconds)
        "credits": Credits.view(row, now),
    }


def audit_view(ev: AuditEvent) -> dict[str, Any]:
    return {
        "id": ev.id, "at": ev.at, "actor": ev.actor, "action": ev.action,
        "target": ev.target, "remote_addr": ev.remote_addr, "details": ev.details,
    }


def webhook_view(row: WebhookEndpoint) -> dict[str, Any]:
    """A webhook endpoint: never its signing secret (shown once, at creation)."""
    return {"id": row.id, "url": row.url, "description": row.description, "event_types": list(row.event_types),
            "created_at": row.created_at, "deleted_at": row.deleted_at}


def _seconds(ms: int | None) -> int | None:
    return None if ms is None else ms // 1000


def delivery_view(row: WebhookDelivery, event_type: str) -> dict[str, Any]:
    """One delivery in the log: its state and last outcome, never the payload.
    ``webhook_id`` is the webhook-id header (shared by replays of the same event)."""
    return {
        "id": row.id, "webhook_id": row.event_id, "event_type": event_type, "endpoint_id": row.endpoint_id,
        "status": row.status, "attempts": row.attempts,
        "next_attempt_at": _seconds(row.next_attempt_at) if row.status == "pending" else None,
        "last_attempt_at": _seconds(row.last_attempt_at), "last_status_code": row.last_status_code,
        "last_error": row.last_error, "delivered_at": _seconds(row.delivered_at),
        "created_at": _seconds(row.created_at), "replay_of": row.replay_of,
    }
