"""The outbox's entrance: audited key actions become webhook events.

:func:`add_webhook_events` runs before every flush (services/common.py
registers it, beside ``audit_event``) and turns each new audit event whose
action is in ``AUDIT_TO_EVENT`` into one event row and one delivery row per
subscribed endpoint, in the same transaction as the key change. So a committed
change always has its deliveries queued and a rolled-back one has none,
whoever wrote it (the API, the CLI, the expiry scan, leak detection), and no
caller needs to know about webhooks.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import ApiKey, AuditEvent, WebhookDelivery, WebhookEndpoint, WebhookEvent

__all__ = [
    "AUDIT_TO_EVENT", "EVENT_TYPES", "add_webhook_events", "delivery_values", "event_values", "new_delivery", "new_id",
    "subscribed",
]

# audited action -> webhook event type: the one place that decides which key actions are announced
AUDIT_TO_EVENT = {
    "key.mint": "key.created",
    "key.roll": "key.rolled",
    "key.revoke": "key.revoked",
    "key.expiring": "key.expiring",
    "key.grace_ending": "key.grace_ending",
    "key.leaked": "key.leaked",
}
EVENT_TYPES = tuple(AUDIT_TO_EVENT.values())

def new_id(prefix: str, now: float) -> str:
    """``prefix`` + milliseconds in hex + randomness: unique, and sorted by time."""
    return f"{prefix}{int(now * 1000):012x}{secrets.token_hex(8)}"


# --- events from audit events, in the audit event's transaction ----------------

def _key_fields(row: ApiKey | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"id": row.id, "name": row.name, "subject": row.subject, "created_at": row.created_at,
            "expires_at": row.expires_at, "revoked_at": row.revoked_at, "grace_ends_at": row.grace_ends_at,
            "rolled_from": row.rolled_from, "rolled_to": row.rolled_to}


def _payload(event_type: str, audit: AuditEvent, key: ApiKey | None) -> dict[str, Any]:
    """The Standard Webhooks payload: type, timestamp, data. Public facts only
    (key ids are in the JWKS anyway); never a key string or a secret."""
    return {
        "type": event_type,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(audit.at)),
        "data": {"tenant_id": audit.tenant_id, "key": _key_fields(key), "actor": audit.actor,
                 "details": dict(audit.details or {})},
    }


def subscribed(endpoints: Iterable[Any], event_type: str) -> list[str]:
    """The ids of the (id, event_types) endpoints that want ``event_type``."""
    return [e[0] for e in endpoints if event_type in e[1]]


def event_values(event_type: str, audit: AuditEvent, key: ApiKey | None) -> dict[str, Any]:
    """The webhook_events row for ``audit`` (services/mintwrite.py inserts it with Core)."""
    return {"id": new_id("msg_", audit.at), "tenant_id": audit.tenant_id, "type": event_type,
            "created_at": audit.at, "payload": _payload(event_type, audit, key)}


def delivery_values(event: dict[str, Any], endpoint_id: str, now_ms: int) -> dict[str, Any]:
    """A pending webhook_deliveries row for ``event`` (a row of event_values)."""
    return {"id": new_id("dlv_", now_ms / 1000), "tenant_id": event["tenant_id"], "event_id": event["id"],
            "endpoint_id": endpoint_id, "status": "pending", "attempts": 0, "next_attempt_at": now_ms,
            "created_at": now_ms, "replay_of": None}


def add_webhook_events(session: Session, _context: Any, _instances: Any) -> None:
    """``before_flush`` hook: queue deliveries for the audit events this flush inserts."""
    audits = [o for o in session.new if isinstance(o, AuditEvent) and o.action in AUDIT_TO_EVENT]
    if not audits:
        return
    pending_keys = {o.id: o for o in session.new if isinstance(o, ApiKey)}
    with session.no_autoflush:
        for audit in audits:
            event_type = AUDIT_TO_EVENT[audit.action]
            endpoints = [e for e in session.scalars(
                select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == audit.tenant_id,
                                              WebhookEndpoint.deleted_at.is_(None))
            ) if event_type in e.event_types]
            if not endpoints:
                continue
            key = pending_keys.get(audit.target or "") or (
                session.get(ApiKey, audit.target) if audit.target else None)
            event = WebhookEvent(id=new_id("msg_", audit.at), tenant_id=audit.tenant_id, type=event_type,
                                 created_at=audit.at, payload=_payload(event_type, audit, key))
            session.add(event)
            for endpoint in endpoints:
                session.add(new_delivery(event, endpoint.id, audit.at * 1000))


def new_delivery(event: WebhookEvent, endpoint_id: str, now_ms: int, replay_of: str | None = None) -> WebhookDelivery:
    return WebhookDelivery(id=new_id("dlv_", now_ms / 1000), tenant_id=event.tenant_id, event_id=event.id, event=event,
                           endpoint_id=endpoint_id, status="pending", attempts=0, next_attempt_at=now_ms,
                           created_at=now_ms, replay_of=replay_of)
