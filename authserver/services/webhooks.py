"""Webhooks: what tenants manage (endpoints, their settings, the delivery log, replays).

Events enter the outbox in the audit event's transaction (outbox.py); the
sender (webhook_sender.py) delivers them off the request path.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import keys.webhooks as wh

from ..db.models import Tenant, WebhookDelivery, WebhookEndpoint, WebhookEvent
from ..errors import Conflict, InvalidInput, NotFound, WebhooksUnavailable
from ..settings import Settings
from .common import Actor, audit_event
from .outbox import AUDIT_TO_EVENT, EVENT_TYPES, new_delivery, new_id
from .webhook_egress import address_allowed

__all__ = ["AUDIT_TO_EVENT", "DEFAULT_EXPIRING_DAYS", "EVENT_TYPES", "WebhookService", "check_url", "load_box"]

DEFAULT_EXPIRING_DAYS = 7
# every key event is one row per endpoint, in the key change's transaction: keep the fan-out small
MAX_ENDPOINTS = 20
MAX_EXPIRING_DAYS = 365
_NO_KEY = (
    "webhooks need a key outside the database to seal their signing secrets: set AUTHSERVER_WEBHOOK_KEY "
    "or AUTHSERVER_WEBHOOK_KEY_FILE (make one with `authserver webhooks new-key`)"
)


def load_box(settings: Settings) -> wh.SecretBox | None:
    """The sealing key from the setting or its file; None when neither is set."""
    text = settings.webhook_key
    if settings.webhook_key_file:
        try:
            text = Path(settings.webhook_key_file).read_text()
        except OSError as exc:
            raise ValueError(f"AUTHSERVER_WEBHOOK_KEY_FILE: cannot read it ({exc.strerror})") from None
    if not text:
        return None
    previous = tuple(k.strip() for k in (settings.webhook_previous_keys or "").split(",") if k.strip())
    try:
        return wh.SecretBox(text, previous)
    except wh.BadPreviousKey as exc:
        raise ValueError(f"AUTHSERVER_WEBHOOK_PREVIOUS_KEYS: {exc}") from None
    except wh.BadSecret as exc:
        raise ValueError(f"AUTHSERVER_WEBHOOK_KEY: {exc}") from None


def check_url(url: str, settings: Settings) -> str:
    """An endpoint URL we are willing to call: https, or http on loopback when
    allowed; no credentials in it (they would be stored in the clear)."""
    if len(url) > 2048 or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise InvalidInput("url must be an absolute http(s) URL of at most 2048 characters, without spaces")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidInput("url must be an absolute https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url must not carry credentials: verify the webhook-signature instead")
    if parts.scheme == "http":
        if not (settings.webhook_allow_http_loopback and _is_loopback(host)):
            raise InvalidInput("url must be https:// (http:// only to loopback, with "
                               "AUTHSERVER_WEBHOOK_ALLOW_HTTP_LOOPBACK)")
    try:
        parts.port  # noqa: B018  # raises ValueError for a bad port
    except ValueError:
        raise InvalidInput("url has an invalid port") from None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return url  # a name: checked on the address it resolves to, at each connect
    if not address_allowed(literal, settings):
        raise InvalidInput("url points at a private or reserved address; webhooks reach public addresses "
                           "(AUTHSERVER_WEBHOOK_ALLOW_PRIVATE_NETWORKS allows private ones)")
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- what tenants manage ---------------------------------------------------------

class WebhookService:
    """Endpoints, the delivery log and replays, for the API, the CLI and the portal."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], box: wh.SecretBox | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.sessions = sessions
        self.box = box
        self.clock = clock

    @property
    def enabled(self) -> bool:
        return self.box is not None

    async def create(self, tenant_id: str, url: str, event_types: Sequence[str] | None, description: str | None,
                     actor: Actor) -> tuple[WebhookEndpoint, str]:
        """A new endpoint and its signing secret (returned here only; stored sealed)."""
        if self.box is None:
            raise WebhooksUnavailable(_NO_KEY)
        check_url(url, self.settings)
        types = list(dict.fromkeys(event_types)) if event_types else list(EVENT_TYPES)
        unknown = [t for t in types if t not in EVENT_TYPES]
        if unknown:
            raise InvalidInput(f"unknown event type(s) {unknown}; known: {list(EVENT_TYPES)}")
        now = self.clock()
        secret = wh.new_secret()
        endpoint_id = new_id("ep_", now)
        row = WebhookEndpoint(id=endpoint_id, tenant_id=tenant_id, url=url, description=description,
                              event_types=types, secret_sealed=self.box.seal(secret, endpoint_id),
                              created_at=int(now), deleted_at=None)
        async with self.sessions() as s, s.begin():
            if await s.get(Tenant, tenant_id, with_for_update=True) is None:  # one tenant's adds in turn
                raise NotFound("no such tenant")
            live = await s.scalar(select(func.count()).select_from(WebhookEndpoint).where(
                WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.deleted_at.is_(None)))
            if (live or 0) >= MAX_ENDPOINTS:
                raise Conflict(f"a tenant has at most {MAX_ENDPOINTS} webhook endpoints; remove one first")
            s.add(row)
            s.add(audit_event(tenant_id, actor, "webhook.create", endpoint_id, {"url": url, "event_types": types},
                              now))
        return row, secret

    async def endpoints(self, tenant_id: str) -> list[WebhookEndpoint]:
        async with self.sessions() as s:
            return list(await s.scalars(
                select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id,
                                              WebhookEndpoint.deleted_at.is_(None))
                .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)))

    async def get(self, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
        async with self.sessions() as s:
            return await self._endpoint(s, tenant_id, endpoint_id)

    async def delete(self, tenant_id: str, endpoint_id: str, actor: Actor) -> WebhookEndpoint:
        """Nothing more is sent to it (pending deliveries are cancelled); its log stays."""
        async with self.sessions() as s, s.begin():
            row = await self._endpoint(s, tenant_id, endpoint_id)
            row.deleted_at = int(self.clock())
            await s.execute(update(WebhookDelivery)
                            .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending")
                            .values(status="cancelled", lease_owner=None, lease_until=None)
                            .execution_options(synchronize_session=False))
            s.add(audit_event(tenant_id, actor, "webhook.delete", endpoint_id, {}, self.clock()))
        return row

    async def deliveries(self, tenant_id: str, endpoint_id: str | None = None, limit: int = 50,
                         before: str | None = None) -> list[tuple[WebhookDelivery, str]]:
        """The newest deliveries (with their event type), of one endpoint or all the
        tenant's; ``before``: only older than that delivery id (ids sort by creation
        time: dlv_ + fixed-width hex milliseconds), the next page after it."""
        q = (select(WebhookDelivery, WebhookEvent.type).join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
             .where(WebhookDelivery.tenant_id == tenant_id))
        if before is not None:
            q = q.where(WebhookDelivery.id < before)
        async with self.sessions() as s:
            if endpoint_id is not None:
                await self._endpoint(s, tenant_id, endpoint_id, deleted_ok=True)
                q = q.where(WebhookDelivery.endpoint_id == endpoint_id)
            rows = await s.execute(q.order_by(WebhookDelivery.id.desc()).limit(limit))
            return [(d, t) for d, t in rows]

    async def replay(self, tenant_id: str, delivery_id: str, actor: Actor) -> tuple[WebhookDelivery, str]:
        """Send a delivery's event again, as a new delivery with the same webhook-id."""
        async with self.sessions() as s, s.begin():
            old = await s.get(WebhookDelivery, delivery_id)
            if old is None or old.tenant_id != tenant_id:
                raise NotFound("no such delivery")
            endpoint = await self._endpoint(s, tenant_id, old.endpoint_id, deleted_ok=True)
            if endpoint.deleted_at is not None:
                raise Conflict("this delivery's endpoint was removed")
            event = await s.get(WebhookEvent, old.event_id)
            assert event is not None  # deliveries go with their event (foreign key)
            row = new_delivery(event, endpoint.id, int(self.clock() * 1000), replay_of=old.id)
            s.add(row)
            s.add(audit_event(tenant_id, actor, "webhook.replay", delivery_id, {"delivery": row.id}, self.clock()))
        return row, event.type

    async def expiring_days(self, tenant_id: str) -> int:
        async with self.sessions() as s:
            tenant = await s.get(Tenant, tenant_id)
            if tenant is None:
                raise NotFound("no such tenant")
            return tenant.key_expiring_days or DEFAULT_EXPIRING_DAYS

    async def set_expiring_days(self, tenant_id: str, days: int, actor: Actor) -> int:
        """key.expiring fires ``days`` before a key's expiry (per tenant)."""
        if not 1 <= days <= MAX_EXPIRING_DAYS:
            raise InvalidInput(f"expiring_days must be between 1 and {MAX_EXPIRING_DAYS}")
        async with self.sessions() as s, s.begin():
            tenant = await s.get(Tenant, tenant_id, with_for_update=True)
            if tenant is None:
                raise NotFound("no such tenant")
            tenant.key_expiring_days = days
            s.add(audit_event(tenant_id, actor, "webhook.settings", None, {"expiring_days": days}, self.clock()))
        return days

    async def reseal_all(self) -> tuple[int, int, list[str]]:
        """Every live endpoint's secret sealed under the current key (after a key
        rotation, all tenants): how many were resealed, how many already were,
        and the ids of those no key of this box opens (they need a new endpoint)."""
        if self.box is None:
            raise WebhooksUnavailable(_NO_KEY)
        resealed, current, lost = 0, 0, []
        async with self.sessions() as s:
            rows = (await s.execute(select(WebhookEndpoint.id, WebhookEndpoint.secret_sealed)
                                    .where(WebhookEndpoint.deleted_at.is_(None)))).all()
        for endpoint_id, sealed in rows:
            try:
                fresh = self.box.reseal(sealed, endpoint_id)
            except wh.BadSecret:
                lost.append(endpoint_id)
                continue
            if fresh is None:
                current += 1
                continue
            async with self.sessions() as s, s.begin():
                # only if unchanged since read: a concurrent reseal already did it
                await s.execute(update(WebhookEndpoint)
                                .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.secret_sealed == sealed)
                                .values(secret_sealed=fresh).execution_options(synchronize_session=False))
            resealed += 1
        return resealed, current, lost

    @staticmethod
    async def _endpoint(s: AsyncSession, tenant_id: str, endpoint_id: str, *,
                        deleted_ok: bool = False) -> WebhookEndpoint:
        row = await s.get(WebhookEndpoint, endpoint_id)
        if row is None or row.tenant_id != tenant_id or (row.deleted_at is not None and not deleted_ok):
            raise NotFound("no such webhook endpoint")
        return row
