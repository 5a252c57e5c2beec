"""The consumer portal: one-time sign-in links for an API producer's customers,
and what a signed-in consumer may do with the keys of their own subject.

A link carries 256 random bits; the database keeps only their SHA-256 (a dump
opens no session), a link works once (one conditional UPDATE decides, as for
rolls) and only until it expires. Every key change goes through KeyLifecycle,
so the rules, audit events and publishing are the API's; this module adds the
subject and the producer's policy (``ConsumerPolicy``), nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import msgspec
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import keys

from ..db.models import ApiKey, PortalSignIn
from ..errors import InvalidInput, NotFound, QuotaExceeded
from ..keycache import KeyCache
from ..schemas import ConsumerPolicy, PortalSessionRequest, key_spec
from ..settings import Settings
from .common import Actor, audit_event, tenant_of
from .lifecycle import KeyLifecycle
from .queries import KeyQueries, Page, state_filter
from .usage import UsageQueries

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

__all__ = ["Consumer", "ConsumerPortal", "SignIn", "check_return_url", "consumer_actor", "token_hash"]

SIGN_IN_PATH = "/portal/sign-in/"
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_KEEP_USED_SECONDS = 86400  # used and expired links are deleted a day later


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def consumer_actor(subject: str) -> str:
    """The audit log's actor for a consumer: ``portal:<subject>`` (hashed when too long for the column)."""
    actor = f"portal:{subject}"
    return actor if len(actor) <= 128 else f"portal:sha256:{hashlib.sha256(subject.encode()).hexdigest()}"


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_return_url(url: str, base_url: str) -> str:
    """The consumer's way back: https, or http to a loopback host while this
    server itself is served over http (local development); no credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  # raises ValueError for a bad port
    except ValueError:
        host = None
    ok = host is not None and parts.username is None and parts.password is None and (
        parts.scheme == "https" or (parts.scheme == "http" and base_url.startswith("http://") and _loopback(host))
    )
    if not ok:
        raise InvalidInput("return_url must be an https URL without credentials (http only to a loopback host, "
                           "and only while this server's public URL is http)")
    return url


@dataclass(frozen=True, slots=True)
class SignIn:
    """A redeemed link: who signed in, on whose behalf, within what."""

    tenant_id: str
    subject: str
    policy: ConsumerPolicy
    return_url: str | None
    created_by: str  # the admin key that asked for the link


@dataclass(frozen=True, slots=True)
class Consumer:
    """A signed-in consumer: everything here is scoped to ``subject`` in ``tenant_id``."""

    tenant_id: str
    subject: str
    policy: ConsumerPolicy
    remote_addr: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor(consumer_actor(self.subject), self.remote_addr)


class ConsumerPortal:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], cache: KeyCache,
                 lifecycle: KeyLifecycle, queries: KeyQueries, usage: UsageQueries,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.sessions = sessions
        self.cache = cache
        self.lifecycle = lifecycle
        self.queries = queries
        self.usage = usage
        self.clock = clock

    # --- links ------------------------------------------------------------------

    async def create_sign_in(self, tenant_id: str, req: PortalSessionRequest, actor: Actor) -> tuple[str, int]:
        """A one-time sign-in URL for ``req.subject`` and when it expires."""
        tenant_of(self.cache, tenant_id)
        return_url = check_return_url(req.return_url, self.settings.base_url) if req.return_url else None
        token = secrets.token_urlsafe(32)
        now = int(self.clock())
        expires_at = now + req.ttl
        policy = msgspec.to_builtins(req.policy)
        async with self.sessions() as s, s.begin():
            # links are short-lived: the table stays small without a sweeper
            await s.execute(delete(PortalSignIn).where(PortalSignIn.expires_at < now - _KEEP_USED_SECONDS))
            s.add(PortalSignIn(token_hash=token_hash(token), tenant_id=tenant_id, subject=req.subject, policy=policy,
                               return_url=return_url, created_by=actor.id, created_at=now, expires_at=expires_at,
                               used_at=None))
            s.add(audit_event(tenant_id, actor, "portal.link", None,
                              {"subject": req.subject, "ttl": req.ttl, "policy": policy}, now))
        return f"{self.settings.base_url}{SIGN_IN_PATH}{token}", expires_at

    async def redeem(self, token: str, remote_addr: str | None) -> SignIn | None:
        """The link's grant, once: None for an unknown, used or expired link (one answer for all)."""
        if not _TOKEN_RE.fullmatch(token):
            return None
        digest = token_hash(token)
        now = int(self.clock())
        async with self.sessions() as s, s.begin():
            claimed = await s.execute(
                update(PortalSignIn)
                .where(PortalSignIn.token_hash == digest, PortalSignIn.used_at.is_(None),
                       PortalSignIn.expires_at > now)
                .values(used_at=now).execution_options(synchronize_session=False)
            )
            if cast("CursorResult[Any]", claimed).rowcount != 1:
                return None
            row = await s.get(PortalSignIn, digest)
            # found by its hash (the lookup learns nothing about the token); compared in constant time anyway
            if row is None or not hmac.compare_digest(row.token_hash.encode(), digest.encode()):
                return None
            if self.cache.get(row.tenant_id) is None:
                return None
            s.add(audit_event(row.tenant_id, Actor(consumer_actor(row.subject), remote_addr), "portal.sign_in",
                              None, {"subject": row.subject, "link_by": row.created_by}, now))
            return SignIn(row.tenant_id, row.subject, msgspec.convert(row.policy, ConsumerPolicy),
                          row.return_url, row.created_by)

    # --- the consumer's keys ------------------------------------------------------

    async def list_keys(self, c: Consumer, *, limit: int, cursor: str | None = None, state: str = "all") -> Page:
        return await self.queries.list_keys(c.tenant_id, state=state, limit=limit, cursor=cursor, subject=c.subject)

    async def active_count(self, c: Consumer) -> int:
        """The consumer's active keys: what ``max_keys`` bounds."""
        async with self.sessions() as s:
            return await _active_keys(s, c, int(self.clock()))

    async def get(self, c: Consumer, kid: str) -> ApiKey:
        """The consumer's key, or 404 exactly as for a key that does not exist."""
        try:
            row = await self.queries.get(c.tenant_id, kid)
        except NotFound:
            raise NotFound("no such key") from None  # not even "it is an admin key"
        if row.subject != c.subject:
            raise NotFound("no such key")
        return row

    async def usage_totals(self, c: Consumer, kid: str) -> dict[str, int]:
        await self.get(c, kid)
        return await self.usage.totals(c.tenant_id, kid)

    def check_mint(self, c: Consumer, scopes: list[str], expires_in: int | None) -> None:
        """The policy's scope and lifetime rules (422), before any work."""
        p = c.policy
        refused = [s for s in scopes if s not in p.allowed_scopes]
        if refused:
            allowed = ", ".join(p.allowed_scopes) or "none"
            raise InvalidInput(f"scope {', '.join(refused)} is not allowed here (allowed: {allowed})")
        if p.max_lifetime is not None and (expires_in is None or expires_in > p.max_lifetime):
            raise InvalidInput(f"a key must expire within {_days(p.max_lifetime)}")

    async def mint(self, c: Consumer, name: str, scopes: list[str],
                   expires_in: int | None) -> tuple[ApiKey, keys.MintedKey]:
        self.check_mint(c, scopes, expires_in)
        spec = key_spec({"name": name, "subject": c.subject, "scopes": scopes, "expires_in": expires_in})

        async def within_limit(s: AsyncSession, now: int) -> None:
            # under the tenant's lock (KeyLifecycle.mint): parallel mints cannot overshoot
            n = await _active_keys(s, c, now)
            if n >= c.policy.max_keys:
                raise QuotaExceeded(f"you already have {n} active keys, the most allowed is {c.policy.max_keys}: "
                                    "revoke one first (a key you roll does not count during its grace period)")

        return await self.lifecycle.mint(c.tenant_id, spec, c.actor, within=within_limit)

    async def roll(self, c: Consumer, kid: str, grace_seconds: int) -> tuple[ApiKey, keys.MintedKey, ApiKey]:
        old = await self.get(c, kid)
        expires_in = None  # the old key's lifetime...
        limit = c.policy.max_lifetime
        lifetime = None if old.expires_at is None else old.expires_at - old.created_at
        if limit is not None and (lifetime is None or lifetime > limit):
            expires_in = limit  # ...within the policy (a key the producer made may live longer)
        return await self.lifecycle.roll(c.tenant_id, kid, c.actor, grace_seconds=grace_seconds,
                                         expires_in=expires_in)

    async def revoke(self, c: Consumer, kid: str) -> ApiKey:
        await self.get(c, kid)
        return await self.lifecycle.revoke(c.tenant_id, kid, c.actor)


async def _active_keys(s: AsyncSession, c: Consumer, now: int) -> int:
    active = state_filter("active", now)
    assert active is not None  # "active" always has a filter
    return int((await s.execute(select(func.count()).select_from(ApiKey).where(
        ApiKey.tenant_id == c.tenant_id, ApiKey.kind == "api", ApiKey.subject == c.subject, active,
    ))).scalar_one())


def _days(seconds: int) -> str:
    if seconds % 86400 == 0:
        d = seconds // 86400
        return f"{d} day{'s' if d != 1 else ''}"
    return f"{seconds} seconds"
