"""What every service shares: who acted, audit events, and publishing a change.

Every change is one database transaction (the key row and its audit event
together), then the local cache, then a change notice to other replicas. A
key is published only from its committed row, so no JWK exists without one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from ..db.models import ApiKey, AuditEvent
from ..errors import NotFound
from ..keycache import KeyCache, TenantKeys
from ..schemas import KEY_ID_PATTERN
from .outbox import add_webhook_events

__all__ = [
    "ADMIN_PREFIX", "Actor", "ChangeHook", "Notifier", "Publisher", "audit_action", "audit_event", "checked_kid",
    "no_notice", "no_such_key", "tenant_of",
]

log = logging.getLogger("authserver.keys")
ADMIN_PREFIX = "sk_admin_"

Notifier = Callable[[str, str], Awaitable[None]]  # (tenant_id, kid)
ChangeHook = Callable[[str, str, ApiKey], None]  # (action, tenant_id, row): metrics


_KEY_ID_RE = re.compile(KEY_ID_PATTERN)


def checked_kid(kid: str) -> str:
    """A key id as the client gave it: one that cannot be ours (a NUL, which
    PostgreSQL refuses; any other character; too long) is simply not found,
    before it reaches the database."""
    if not _KEY_ID_RE.fullmatch(kid):
        raise NotFound("no such key")
    return kid


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it, for the audit log."""

    id: str  # admin key id, or "cli"
    remote_addr: str | None = None


async def no_notice(tenant_id: str, kid: str) -> None:
    """The notifier of a single replica: nobody else to tell."""
    return None


def audit_event(tenant_id: str, actor: Actor, action: str, target: str | None, details: dict[str, Any],
                at: float) -> AuditEvent:
    """An audit record for the caller to add to its transaction; a key action
    among outbox.AUDIT_TO_EVENT also queues its webhook deliveries there (below)."""
    return AuditEvent(tenant_id=tenant_id, at=int(at), actor=actor.id, action=action, target=target,
                      remote_addr=actor.remote_addr, details=details)


# every session: the flush that inserts an audit event queues its webhook deliveries in the same transaction
if not event.contains(Session, "before_flush", add_webhook_events):
    event.listen(Session, "before_flush", add_webhook_events)

# admin keys and API keys share a table and an id space but not their routes
_KINDS = {"api": ("API key", "/v1/keys", "authserver keys"),
          "admin": ("admin key", "/v1/admin-keys", "authserver admin-keys")}


def audit_action(kind: str, verb: str) -> str:
    """key.mint, key.roll, ... for API keys; admin_key.mint, ... for admin keys."""
    return f"{'admin_key' if kind == 'admin' else 'key'}.{verb}"


def no_such_key(row: ApiKey | None, tenant_id: str, kid: str, kind: str) -> NotFound:
    """404 for ``kid`` as a ``kind`` key; if it is the tenant's key of the other
    kind, say so and where it is managed (same tenant only: nothing leaks)."""
    if row is not None and row.tenant_id == tenant_id and row.kind != kind and row.kind in _KINDS and kind in _KINDS:
        what, path, cli = _KINDS[row.kind]
        return NotFound(f"no such {_KINDS[kind][0]}: {kid} is an {what}; use {path}/{kid}, "
                        f"or `{cli} get|roll|revoke {kid}`")
    return NotFound("no such key")


def tenant_of(cache: KeyCache, tenant_id: str) -> TenantKeys:
    tk = cache.get(tenant_id)
    if tk is None:
        raise NotFound("no such tenant")
    return tk


class Publisher:
    """After a commit: the local cache, then the other replicas, then metrics and the log."""

    def __init__(self, cache: KeyCache, notify: Notifier = no_notice, on_change: ChangeHook | None = None,
                 on_minted: Callable[[ApiKey], None] | None = None) -> None:
        self.cache = cache
        self.notify = notify
        self.on_change = on_change
        self.on_minted = on_minted  # the reconcile loop need not reread it (CacheSync.minted_here)

    async def publish(self, row: ApiKey, *, minted: bool = False) -> None:
        """``minted``: a key this process just created (no other writer knows its id yet)."""
        self.cache.apply(row)
        if minted and self.on_minted is not None:
            self.on_minted(row)
        await self.notify(row.tenant_id, row.id)

    def changed(self, action: str, row: ApiKey) -> None:
        # key ids are public (they are in the JWKS); the key string never is logged
        log.info("%s %s", action, row.id, extra={"tenant": row.tenant_id, "kid": row.id, "action": action})
        if self.on_change is not None:
            self.on_change(action, row.tenant_id, row)
