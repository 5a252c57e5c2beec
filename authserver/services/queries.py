"""Reading keys and the audit trail: get, list (paginated by cursor), audit."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models import ApiKey, AuditEvent
from ..errors import InvalidInput
from ..keycache import KeyCache
from ..settings import Settings
from .common import no_such_key, tenant_of

__all__ = ["STATES", "KeyQueries", "Page", "decode_cursor", "encode_cursor", "state_filter"]

STATES = ("active", "rolling", "live", "expired", "revoked", "all")


@dataclass(frozen=True, slots=True)
class Page:
    items: list[ApiKey]
    next_cursor: str | None


def encode_cursor(row: ApiKey) -> str:
    return base64.urlsafe_b64encode(f"{row.created_at}:{row.id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, kid = raw.split(":", 1)
        return int(created), kid
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this server issued") from None


def state_filter(state: str, now: int) -> ColumnElement[bool] | None:
    live = and_(ApiKey.revoked_at.is_(None), or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))
    if state == "active":
        return and_(live, ApiKey.grace_ends_at.is_(None))
    if state == "rolling":
        return and_(live, ApiKey.grace_ends_at > now)
    if state == "live":
        return and_(live, or_(ApiKey.grace_ends_at.is_(None), ApiKey.grace_ends_at > now))
    if state == "revoked":
        return ApiKey.revoked_at.is_not(None)
    if state == "expired":
        return and_(
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at <= now, ApiKey.grace_ends_at <= now),
        )
    return None


class KeyQueries:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], cache: KeyCache,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.sessions = sessions
        self.cache = cache
        self.clock = clock

    async def get(self, tenant_id: str, kid: str, *, kind: str = "api") -> ApiKey:
        tenant_of(self.cache, tenant_id)
        async with self.sessions() as s:
            row = await s.get(ApiKey, kid)
        if row is None or row.tenant_id != tenant_id or row.kind != kind:
            raise no_such_key(row, tenant_id, kid, kind)
        return row

    async def list_keys(
        self, tenant_id: str, *, state: str = "all", limit: int = 50, cursor: str | None = None,
        subject: str | None = None, search: str | None = None, kind: str = "api",
        unused_for: int | None = None,
    ) -> Page:
        """Keys newest first. ``search``: a case-insensitive substring of the name
        or subject, or a key id prefix. ``unused_for``: only keys no gateway has
        reported a call for in that many seconds (nor ever, if older than that)."""
        tenant_of(self.cache, tenant_id)
        if state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}")
        if not (1 <= limit <= self.settings.page_size_max):
            raise InvalidInput(f"limit must be between 1 and {self.settings.page_size_max}")
        q = select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.kind == kind)
        cond = state_filter(state, int(self.clock()))
        if cond is not None:
            q = q.where(cond)
        if subject is not None:
            q = q.where(ApiKey.subject == subject)
        if unused_for is not None:
            since = int(self.clock()) - unused_for
            q = q.where(or_(ApiKey.last_used_at < since,
                            and_(ApiKey.last_used_at.is_(None), ApiKey.created_at < since)))
        if search:
            needle = search.lower()
            q = q.where(or_(
                func.lower(ApiKey.name).contains(needle, autoescape=True),
                func.lower(ApiKey.subject).contains(needle, autoescape=True),
                ApiKey.id.startswith(search, autoescape=True),
            ))
        if cursor:
            created, kid = decode_cursor(cursor)
            q = q.where(or_(ApiKey.created_at < created, and_(ApiKey.created_at == created, ApiKey.id < kid)))
        q = q.order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).limit(limit + 1)
        async with self.sessions() as s:
            rows = list((await s.scalars(q)).all())
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor(rows[-1]) if more and rows else None)

    async def audit(self, tenant_id: str, *, limit: int = 100, before_id: int | None = None) -> list[AuditEvent]:
        tenant_of(self.cache, tenant_id)
        q = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
        if before_id is not None:
            q = q.where(AuditEvent.id < before_id)
        q = q.order_by(AuditEvent.id.desc()).limit(min(max(limit, 1), self.settings.page_size_max))
        async with self.sessions() as s:
            return list((await s.scalars(q)).all())
