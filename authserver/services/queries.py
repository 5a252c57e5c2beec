"""Reading keys and the audit trail: get, list (paginated by cursor), audit."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models import ApiKey, AuditEvent
from ..errors import InvalidInput
from ..keycache import KeyCache
from ..schemas import AUDIT_ACTION_PATTERN, KEY_ID_PATTERN, SEARCH_MAX_LENGTH, SUBJECT_MAX_LENGTH, TEXT_PATTERN
from ..settings import Settings
from .common import checked_kid, no_such_key, tenant_of

__all__ = ["STATES", "AuditPage", "KeyQueries", "Page", "decode_audit_cursor", "decode_cursor",
           "encode_audit_cursor", "encode_cursor", "state_filter"]

STATES = ("active", "rolling", "live", "expired", "revoked", "all")


@dataclass(frozen=True, slots=True)
class Page:
    items: list[ApiKey]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: list[AuditEvent]
    next_cursor: str | None


# Pagination cursors are opaque to clients: base64url of what the next page
# starts after. A cursor is decoded here and only here, and only values this
# server could have issued (int64 columns, key ids) ever reach the database.
_INT64_MAX = 2**63 - 1
_CURSOR_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")
_KEY_CURSOR_RE = re.compile(r"(0|[1-9][0-9]{0,18}):(" + KEY_ID_PATTERN.strip("^$") + ")")
_AUDIT_CURSOR_RE = re.compile(r"a(0|[1-9][0-9]{0,18})")
_TEXT_RE = re.compile(TEXT_PATTERN)
_KEY_ID_RE = re.compile(KEY_ID_PATTERN)
_ACTION_RE = re.compile(AUDIT_ACTION_PATTERN)
BAD_CURSOR = "cursor is not one this server issued: start again from the first page"


def _encode(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str, shape: re.Pattern[str]) -> re.Match[str]:
    if _CURSOR_RE.fullmatch(cursor):
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        except (ValueError, UnicodeDecodeError):
            raw = ""
        m = shape.fullmatch(raw)
        if m and int(m.group(1)) <= _INT64_MAX:
            return m
    raise InvalidInput(BAD_CURSOR)


def encode_cursor(row: ApiKey) -> str:
    return _encode(f"{row.created_at}:{row.id}")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """(created_at, key id) the next page of keys starts after; 422 for anything else."""
    m = _decode(cursor, _KEY_CURSOR_RE)
    return int(m.group(1)), m.group(2)


def encode_audit_cursor(event: AuditEvent) -> str:
    return _encode(f"a{event.id}")


def decode_audit_cursor(cursor: str) -> int:
    """The audit event id the next page starts before; 422 for anything else."""
    return int(_decode(cursor, _AUDIT_CURSOR_RE).group(1))


def checked_text(name: str, value: str | None, max_length: int) -> str | None:
    """A free-text filter (subject, search): printable and bounded, like the
    stored values it is compared with (PostgreSQL refuses a NUL outright)."""
    if value and (len(value) > max_length or not _TEXT_RE.fullmatch(value)):
        raise InvalidInput(f"{name} must be 1 to {max_length} characters, with no control characters")
    return value


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
        checked_kid(kid)
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
        checked_text("subject", subject, SUBJECT_MAX_LENGTH)
        checked_text("q", search, SEARCH_MAX_LENGTH)
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

    async def audit(self, tenant_id: str, *, limit: int = 100, cursor: str | None = None,
                    before_id: int | None = None, key: str | None = None,
                    action: str | None = None) -> AuditPage:
        """Events newest first, optionally only those about one key or of one action.
        ``cursor`` is the ``next_cursor`` of the page before; ``before_id`` (an
        event id) is the older spelling of the same thing."""
        tenant_of(self.cache, tenant_id)
        limit = min(max(limit, 1), self.settings.page_size_max)
        q = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
        if cursor:
            before_id = decode_audit_cursor(cursor)
        if before_id is not None:
            if not 0 <= before_id <= _INT64_MAX:
                raise InvalidInput(BAD_CURSOR)
            q = q.where(AuditEvent.id < before_id)
        if key:
            if not _KEY_ID_RE.fullmatch(key):
                raise InvalidInput("key must be a key id")
            q = q.where(AuditEvent.target == key)
        if action:
            if not _ACTION_RE.fullmatch(action):
                raise InvalidInput("action must be an audit action such as key.mint")
            q = q.where(AuditEvent.action == action)
        q = q.order_by(AuditEvent.id.desc()).limit(limit + 1)
        async with self.sessions() as s:
            events = list((await s.scalars(q)).all())
        more = len(events) > limit
        events = events[:limit]
        return AuditPage(events, encode_audit_cursor(events[-1]) if more and events else None)

    async def key_names(self, tenant_id: str, kids: Iterable[str]) -> dict[str, str | None]:
        """The names of those of ``kids`` that are keys of this tenant (for
        showing names next to ids), in one query."""
        wanted = {k for k in kids if k and _KEY_ID_RE.fullmatch(k)}
        if not wanted:
            return {}
        q = select(ApiKey.id, ApiKey.name).where(ApiKey.tenant_id == tenant_id, ApiKey.id.in_(wanted))
        async with self.sessions() as s:
            return {kid: name for kid, name in (await s.execute(q)).all()}
