"""Tenants and keys: mint, list, get, roll, revoke, introspect.

Every change is one database transaction (the key row and its audit event
together), then the local cache, then a change notice to other replicas. A
key is published only from its committed row, so no JWK exists without one.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import keys

from ..db.models import ApiKey, AuditEvent, Tenant
from ..errors import Conflict, InvalidInput, NotFound
from ..keycache import ADMIN_SCOPES, KeyCache, TenantInfo, TenantKeys
from ..settings import Settings
from .keygen import KeyGenerator

log = logging.getLogger("authserver.keys")
TENANT_ID = re.compile(r"\A[a-z0-9][a-z0-9-]{0,62}\Z")
SCOPE_TOKEN = re.compile(r"\A[\x21\x23-\x5b\x5d-\x7e]{1,128}\Z")  # RFC 6749 §3.3
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
ADMIN_PREFIX = "sk_admin_"
STATES = ("active", "rolling", "live", "expired", "revoked", "all")
MAX_METADATA_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it, for the audit log."""

    id: str  # admin key id, or "cli"
    remote_addr: str | None = None


@dataclass(slots=True)
class KeySpec:
    name: str | None = None
    subject: str | None = None
    scopes: list[str] = field(default_factory=list)
    expires_in: int | None = None  # seconds from now
    algorithm: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    rate_limits: list[dict[str, int]] | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[ApiKey]
    next_cursor: str | None


Notifier = Callable[[str, str], Awaitable[None]]  # (tenant_id, kid)


async def _no_notice(tenant_id: str, kid: str) -> None:
    return None


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _validate_spec(spec: KeySpec, settings: Settings) -> None:
    # The HTTP schema refuses these too; the CLI and the portal reach the service directly.
    if spec.name is not None and len(spec.name) > 200:
        raise InvalidInput("name is longer than 200 characters")
    if spec.name is not None and CONTROL_CHARS.search(spec.name):
        raise InvalidInput("name must not contain control characters")
    if spec.subject is not None and not (0 < len(spec.subject) <= 256):
        raise InvalidInput("subject must be 1 to 256 characters")
    if spec.subject is not None and CONTROL_CHARS.search(spec.subject):
        # gateways forward sub as a header: CR/LF there would split it
        raise InvalidInput("subject must not contain control characters")
    if _has_nul(spec.metadata):
        raise InvalidInput("metadata strings must not contain NUL characters")
    if len(spec.scopes) > 64:
        raise InvalidInput("at most 64 scopes")
    for s in spec.scopes:
        if not isinstance(s, str) or not SCOPE_TOKEN.match(s):
            raise InvalidInput("a scope is 1-128 printable characters without spaces, quotes or backslashes")
    if spec.expires_in is not None and not (1 <= spec.expires_in <= 10 * 365 * 86400):
        raise InvalidInput("expires_in must be between 1 second and 10 years")
    if spec.algorithm is not None and spec.algorithm not in keys.ALGORITHMS:
        raise InvalidInput(f"algorithm must be one of {sorted(keys.ALGORITHMS)}")
    if len(json.dumps(spec.metadata, separators=(",", ":"))) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes as JSON")
    for rl in spec.rate_limits or ():
        limit, window = rl.get("limit"), rl.get("window_seconds")
        if not (isinstance(limit, int) and isinstance(window, int) and limit > 0 and 0 < window <= 86400 * 31):
            raise InvalidInput("a rate limit is {limit: >0, window_seconds: 1..2678400}")
    if spec.rate_limits is not None and len(spec.rate_limits) > 8:
        raise InvalidInput("at most 8 rate limit windows")


def encode_cursor(row: ApiKey) -> str:
    return base64.urlsafe_b64encode(f"{row.created_at}:{row.id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, kid = raw.split(":", 1)
        return int(created), kid
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this server issued") from None


def state_filter(state: str, now: int):
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


class KeyService:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        cache: KeyCache,
        keygen: KeyGenerator,
        clock: Callable[[], float] = time.time,
        notify: Notifier = _no_notice,
        on_change: Callable[[str, str, ApiKey], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.cache = cache
        self.keygen = keygen
        self.clock = clock
        self.notify = notify
        self.on_change = on_change  # metrics hook: (action, tenant_id, row)
        self.prepublisher = None  # set by Core when instant activation is on

    # --- loading ---------------------------------------------------------

    async def load(self, cache: KeyCache | None = None) -> None:
        """Fill ``cache`` (default: ours) with every tenant and published key."""
        cache = self.cache if cache is None else cache
        now = int(self.clock())
        async with self.sessions() as s:
            for tenant in (await s.scalars(select(Tenant))).all():
                cache.set_tenant(tenant)
            rows = await s.stream_scalars(
                # the same order on every replica: the same JWKS bytes and ETag
                select(ApiKey).where(state_filter("live", now))
                .order_by(ApiKey.created_at, ApiKey.id).execution_options(yield_per=2000)
            )
            async for row in rows:
                cache.apply(row)

    async def reconcile(self, since_ms: int) -> int:
        """Reapply rows changed since ``since_ms`` (and any new tenant)."""
        async with self.sessions() as s:
            for tenant in (await s.scalars(select(Tenant).where(Tenant.id.not_in(list(self.cache.tenants) or [""])))).all():
                self.cache.set_tenant(tenant)
            rows = await s.scalars(select(ApiKey).where(ApiKey.changed_at >= since_ms))
            return self.cache.apply_all(rows)

    async def refresh_key(self, kid: str) -> None:
        async with self.sessions() as s:
            row = await s.get(ApiKey, kid)
            if row is not None:
                if row.tenant_id not in self.cache.tenants:
                    tenant = await s.get(Tenant, row.tenant_id)
                    if tenant is not None:
                        self.cache.set_tenant(tenant)
                self.cache.apply(row)

    # --- tenants ---------------------------------------------------------

    def tenant(self, tenant_id: str) -> TenantKeys:
        tk = self.cache.get(tenant_id)
        if tk is None:
            raise NotFound("no such tenant")
        return tk

    async def create_tenant(
        self,
        tenant_id: str,
        *,
        audience: str | None = None,
        key_prefix: str = "sk_live_",
        algorithm: str | None = None,
        actor: Actor = Actor("cli"),
    ) -> tuple[TenantInfo, keys.MintedKey]:
        """Create a tenant and its first admin key (returned once)."""
        if not TENANT_ID.match(tenant_id or ""):
            raise InvalidInput("tenant id: 1-63 of a-z, 0-9 and '-', starting with a letter or digit")
        try:
            keys.validate_prefix(key_prefix)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if key_prefix == ADMIN_PREFIX:
            raise InvalidInput(f"{ADMIN_PREFIX!r} is reserved for admin keys")
        algorithm = algorithm or self.settings.default_algorithm
        if algorithm not in keys.ALGORITHMS:
            raise InvalidInput(f"algorithm must be one of {sorted(keys.ALGORITHMS)}")
        issuer = f"{self.settings.base_url}/t/{tenant_id}"
        row = Tenant(
            id=tenant_id,
            issuer=issuer,
            audience=audience or f"api://{tenant_id}",
            admin_audience=f"{issuer}/admin",
            key_prefix=key_prefix,
            algorithm=algorithm,
            sentinel_jwk=await self.keygen.sentinel(),
            created_at=int(self.clock()),
        )
        if row.audience == row.admin_audience:
            raise InvalidInput("the audience must differ from the admin audience")
        async with self.sessions() as s:
            try:
                async with s.begin():
                    s.add(row)
                    s.add(self._audit(row.id, actor, "tenant.create", None, {"audience": row.audience}))
            except IntegrityError:
                raise Conflict("a tenant with this id exists") from None
        self.cache.set_tenant(row)
        _, admin = await self.mint(row.id, KeySpec(name="admin", scopes=list(ADMIN_SCOPES)), actor, kind="admin")
        return TenantInfo.from_row(row), admin

    async def set_shard_count(self, tenant_id: str, count: int, actor: Actor = Actor("cli")) -> TenantInfo:
        """Spread new keys over ``count`` JWKS shards. Shards only grow: a key
        keeps the shard in its prefix for life, so nothing is re-issued."""
        tk = self.tenant(tenant_id)
        if not (1 <= count <= 4096):
            raise InvalidInput("shard count must be between 1 and 4096")
        if count < tk.info.shard_count:
            raise Conflict("shards can only grow: existing keys carry their shard in their prefix")
        try:
            keys.validate_prefix(tk.info.shard_prefix(count - 1))
        except ValueError:
            raise InvalidInput("the tenant prefix has no room for a shard group (at most 3 groups)") from None
        async with self.sessions() as s:
            async with s.begin():
                row = await s.get(Tenant, tenant_id, with_for_update=True)
                row.shard_count = count
                s.add(self._audit(tenant_id, actor, "tenant.shards", None, {"shard_count": count}))
        self.cache.set_tenant(row)
        return TenantInfo.from_row(row)

    # --- keys -------------------------------------------------------------

    async def mint(
        self, tenant_id: str, spec: KeySpec, actor: Actor, *, kind: str = "api",
        rolled_from: ApiKey | None = None, grace_seconds: int | None = None,
    ) -> tuple[ApiKey, keys.MintedKey]:
        tk = self.tenant(tenant_id)
        _validate_spec(spec, self.settings)
        info = tk.info
        now = int(self.clock())
        expires_at = now + spec.expires_in if spec.expires_in else None
        algorithm = spec.algorithm or info.algorithm
        shard = None if kind == "admin" else tk.least_loaded_shard()
        prefix = ADMIN_PREFIX if kind == "admin" else info.shard_prefix(shard)
        claims = {
            "iss": info.issuer,
            "aud": info.admin_audience if kind == "admin" else info.audience,
            "sub": spec.subject,
            "iat": now,
            "scope": " ".join(spec.scopes) or None,
            "exp": expires_at,
        }
        minted = None
        if self.prepublisher is not None and kind == "api" and rolled_from is None:
            minted = self.prepublisher.take(tenant_id, claims, algorithm)
        if minted is not None:
            prefix = minted.prefix
            pending = tk.published.get(minted.kid)
            shard = pending.shard if pending is not None else None
            pending_since = await self._pending_since(minted.kid)
        else:
            minted = await self.keygen.mint(claims, algorithm=algorithm, prefix=prefix)
            pending_since = None
        row = ApiKey(
            id=minted.kid, tenant_id=tenant_id, kind=kind, name=spec.name,
            subject=minted.claims["sub"], scopes=list(spec.scopes), prefix=prefix,
            last4=minted.key[-4:], algorithm=algorithm, public_jwk=minted.public_jwk,
            meta=dict(spec.metadata), rate_limits=spec.rate_limits, created_at=now,
            expires_at=expires_at, revoked_at=None, grace_ends_at=None,
            rolled_from=rolled_from.id if rolled_from else None, rolled_to=None,
            changed_at=self._now_ms(), shard=shard, published_at=pending_since or now,
        )
        action = "key.roll" if rolled_from else "key.mint"
        details: dict[str, Any] = {"kind": kind, "alg": algorithm, "scopes": list(spec.scopes)}
        async with self.sessions() as s:
            async with s.begin():
                if rolled_from is not None:
                    old = await s.get(ApiKey, rolled_from.id, with_for_update=True)
                    self._check_rollable(old, tenant_id, now)
                    old.grace_ends_at = now + (grace_seconds or 0)
                    old.rolled_to = row.id
                    old.changed_at = row.changed_at
                    details.update(rolled_from=old.id, grace_seconds=grace_seconds)
                if pending_since is not None:
                    # issue a pre-published key: its row exists (kind "pending")
                    await s.execute(delete(ApiKey).where(ApiKey.id == row.id, ApiKey.kind == "pending"))
                    details["prepublished_at"] = pending_since
                s.add(row)
                s.add(self._audit(tenant_id, actor, action, row.id, details))
        if rolled_from is not None:
            self.cache.apply(old)
            await self.notify(tenant_id, old.id)
        self.cache.apply(row)
        await self.notify(tenant_id, row.id)
        self._changed(action, tenant_id, row)
        return row, minted

    async def _pending_since(self, kid: str) -> int | None:
        async with self.sessions() as s:
            row = await s.get(ApiKey, kid)
        return row.created_at if row is not None and row.kind == "pending" else None

    async def add_pending(self, tenant_id: str, jwk: dict[str, Any], *, expires_in: int) -> None:
        """Publish the public half of a pooled keypair (instant activation)."""
        tk = self.tenant(tenant_id)
        now = int(self.clock())
        shard = tk.least_loaded_shard()
        row = ApiKey(
            id=jwk["kid"], tenant_id=tenant_id, kind="pending", name=None, subject="", scopes=[],
            prefix=tk.info.shard_prefix(shard), last4="", algorithm=jwk["alg"], public_jwk=keys.public_only(jwk),
            meta={}, rate_limits=None, created_at=now, expires_at=now + expires_in, revoked_at=None,
            grace_ends_at=None, rolled_from=None, rolled_to=None, changed_at=self._now_ms(), shard=shard,
            published_at=now,
        )
        async with self.sessions() as s, s.begin():
            s.add(row)
        self.cache.apply(row)
        await self.notify(tenant_id, row.id)

    async def drop_pending(self, tenant_id: str, kids: list[str]) -> None:
        """Unpublish evicted pooled keys: their private halves are gone."""
        async with self.sessions() as s, s.begin():
            rows = (await s.scalars(select(ApiKey).where(ApiKey.id.in_(kids), ApiKey.kind == "pending"))).all()
            for row in rows:
                row.revoked_at = int(self.clock())
                row.changed_at = self._now_ms()
        for row in rows:
            self.cache.apply(row)
            await self.notify(tenant_id, row.id)

    def _check_rollable(self, old: ApiKey | None, tenant_id: str, now: int) -> None:
        if old is None or old.tenant_id != tenant_id or old.kind != "api":
            raise NotFound("no such key")
        if old.state(now) != "active":
            raise Conflict(f"only an active key can be rolled; this one is {old.state(now)}")

    async def roll(
        self, tenant_id: str, kid: str, actor: Actor, *, grace_seconds: int | None = None,
        expires_in: int | None = None,
    ) -> tuple[ApiKey, keys.MintedKey, ApiKey]:
        grace = self.settings.default_grace_seconds if grace_seconds is None else grace_seconds
        if not (0 <= grace <= self.settings.max_grace_seconds):
            raise InvalidInput(f"grace_seconds must be between 0 and {self.settings.max_grace_seconds}")
        old = await self.get(tenant_id, kid)
        now = int(self.clock())
        self._check_rollable(old, tenant_id, now)
        if expires_in is None and old.expires_at is not None:
            expires_in = max(1, old.expires_at - old.created_at)
        spec = KeySpec(
            name=old.name, subject=old.subject, scopes=list(old.scopes), expires_in=expires_in,
            algorithm=old.algorithm, metadata=dict(old.meta), rate_limits=old.rate_limits,
        )
        new, minted = await self.mint(tenant_id, spec, actor, rolled_from=old, grace_seconds=grace)
        return new, minted, await self.get(tenant_id, kid)

    async def revoke(self, tenant_id: str, kid: str, actor: Actor, *, kind: str = "api") -> ApiKey:
        self.tenant(tenant_id)
        now = int(self.clock())
        async with self.sessions() as s:
            async with s.begin():
                row = await s.get(ApiKey, kid, with_for_update=True)
                if row is None or row.tenant_id != tenant_id or row.kind != kind:
                    raise NotFound("no such key")
                if row.revoked_at is not None:
                    return row  # idempotent: revoking twice is not an error
                row.revoked_at = now
                row.changed_at = self._now_ms()
                s.add(self._audit(tenant_id, actor, "key.revoke", kid, {"kind": kind}))
        self.cache.apply(row)
        await self.notify(tenant_id, kid)
        self._changed("key.revoke", tenant_id, row)
        return row

    async def get(self, tenant_id: str, kid: str, *, kind: str = "api") -> ApiKey:
        self.tenant(tenant_id)
        async with self.sessions() as s:
            row = await s.get(ApiKey, kid)
        if row is None or row.tenant_id != tenant_id or row.kind != kind:
            raise NotFound("no such key")
        return row

    async def list(
        self, tenant_id: str, *, state: str = "all", limit: int = 50, cursor: str | None = None,
        subject: str | None = None, search: str | None = None, kind: str = "api",
    ) -> Page:
        self.tenant(tenant_id)
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
        if search:
            # case-insensitive substring of name or subject, or a key id prefix
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

    async def record(self, tenant_id: str, actor: Actor, action: str, target: str | None = None,
                     details: dict[str, Any] | None = None) -> None:
        """Append an audit event that is not part of a key change (e.g. a portal sign-in)."""
        async with self.sessions() as s, s.begin():
            s.add(self._audit(tenant_id, actor, action, target, details or {}))

    async def audit(self, tenant_id: str, *, limit: int = 100, before_id: int | None = None) -> list[AuditEvent]:
        self.tenant(tenant_id)
        q = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
        if before_id is not None:
            q = q.where(AuditEvent.id < before_id)
        q = q.order_by(AuditEvent.id.desc()).limit(min(max(limit, 1), self.settings.page_size_max))
        async with self.sessions() as s:
            return list((await s.scalars(q)).all())

    async def all_tenants(self) -> list[Tenant]:
        async with self.sessions() as s:
            return list((await s.scalars(select(Tenant).order_by(Tenant.id))).all())

    # --- introspection ---------------------------------------------------

    async def introspect(self, tenant_id: str, token: str) -> dict[str, Any]:
        """RFC 7662 answer for a token, judged as the tenant's gateways would,
        plus a ``status`` for the operator (VALID, EXPIRED, REVOKED, INVALID)."""
        tk = self.tenant(tenant_id)
        try:
            verified = tk.api_verifier.verify(token)
        except keys.ExpiredToken:
            return {"active": False, "status": "EXPIRED"}
        except keys.UnknownKeyId:
            return {"active": False, "status": await self._why_unknown(tenant_id, token)}
        except keys.KeyCoreError:
            return {"active": False, "status": "INVALID"}
        published = tk.published.get(verified.kid)
        claims = verified.claims
        answer: dict[str, Any] = {
            "active": True,
            "status": "VALID",
            "token_type": "api_key",
            "kid": verified.kid,
            **{k: claims[k] for k in ("iss", "aud", "sub", "iat", "exp", "jti", "scope") if k in claims},
        }
        if published is not None:
            answer["rate_limits"] = list(published.rate_limits)
            answer["metadata"] = published.meta
            if published.removed_at is not None:
                answer["published_until"] = published.removed_at
        return answer

    async def _why_unknown(self, tenant_id: str, token: str) -> str:
        try:
            kid = keys.unverified_kid(token)
        except keys.KeyCoreError:
            return "INVALID"
        async with self.sessions() as s:
            row = await s.get(ApiKey, kid) if len(kid) <= 64 else None
        if row is None or row.tenant_id != tenant_id or row.kind != "api":
            return "INVALID"
        state = row.state(self.clock())
        return {"revoked": "REVOKED", "expired": "EXPIRED", "rolled": "EXPIRED"}.get(state, "INVALID")

    # --- helpers -----------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _audit(self, tenant_id: str, actor: Actor, action: str, target: str | None, details: dict[str, Any]) -> AuditEvent:
        return AuditEvent(
            tenant_id=tenant_id, at=int(self.clock()), actor=actor.id, action=action,
            target=target, remote_addr=actor.remote_addr, details=details,
        )

    def _changed(self, action: str, tenant_id: str, row: ApiKey) -> None:
        # key ids are public (they are in the JWKS); the key string never is logged
        log.info("%s %s", action, row.id, extra={"tenant": tenant_id, "kid": row.id, "action": action})
        if self.on_change is not None:
            self.on_change(action, tenant_id, row)


def key_view(row: ApiKey, now: float, settings: Settings) -> dict[str, Any]:
    """Public description of a key: never the key string itself."""
    return {
        "id": row.id,
        "kind": row.kind,
        "name": row.name,
        "subject": row.subject,
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
        "shard": row.shard,
        "published_at": row.published_at or row.created_at,
        # gateways refetch the JWKS every gateway_cache_seconds and not on an unknown kid
        "gateway_accepts_after": (row.published_at or row.created_at) + settings.gateway_cache_seconds,
        "metadata": row.meta,
        "rate_limits": row.rate_limits,
    }


def audit_view(ev: AuditEvent) -> dict[str, Any]:
    return {
        "id": ev.id, "at": ev.at, "actor": ev.actor, "action": ev.action,
        "target": ev.target, "remote_addr": ev.remote_addr, "details": ev.details,
    }
