"""A key's life: mint, roll, revoke (and the audit events that go with them)."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import keys

from ..db.models import ApiKey, Tenant
from ..db.writes import Transactions
from ..errors import Conflict, InvalidInput, LastAdminKey
from ..keycache import KeyCache, TenantKeys
from ..schemas import ADMIN_KEYS_WRITE, KeyPatch, KeySpec, key_spec
from ..settings import Settings
from ..stagetimes import Stages
from .common import ADMIN_PREFIX, Actor, Publisher, audit_action, audit_event, checked_kid, no_such_key, tenant_of
from .keygen import KeyGenerator
from .mintwrite import rehearse_mint, write_mint
from .prepublish import Prepublished, Prepublisher
from .queries import state_filter
from .quota import lock_tenant, reserve_live_key

__all__ = ["KeyLifecycle"]

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult


@dataclass(frozen=True, slots=True)
class _Fresh:
    """A key minted with a keypair generated for it."""

    minted: keys.MintedKey
    shard: int | None
    published_at: int

    async def claim(self, session: AsyncSession) -> None:
        return None


def _rollable(old: ApiKey | None, tenant_id: str, kid: str, now: int, kind: str) -> ApiKey:
    if old is None or old.tenant_id != tenant_id or old.kind != kind:
        raise no_such_key(old, tenant_id, kid, kind)
    if old.state(now) != "active":
        raise Conflict(f"only an active key can be rolled; this one is {old.state(now)}")
    return old


def _can_manage(row: ApiKey, now: int) -> bool:
    """An active admin key (not expired, not on its way out by a roll) that can manage admin keys."""
    return row.kind == "admin" and row.state(now) == "active" and ADMIN_KEYS_WRITE in row.scopes


async def _claim_roll(s: AsyncSession, tenant_id: str, kid: str, successor: ApiKey, now: int,
                      grace_ends_at: int, kind: str) -> None:
    """Mark ``kid`` as rolled to ``successor``, only if it is still active.

    One conditional UPDATE decides: the database evaluates the condition
    against the committed row under its write lock (PostgreSQL rechecks it
    after waiting for a concurrent roll; SQLite has one writer), so of any
    number of concurrent rolls, on any replica or CLI process, exactly one
    matches a row and every other one gets 409.
    """
    claimed = await s.execute(
        update(ApiKey)
        .where(ApiKey.id == kid, ApiKey.tenant_id == tenant_id, ApiKey.kind == kind,
               ApiKey.rolled_to.is_(None), ApiKey.grace_ends_at.is_(None), ApiKey.revoked_at.is_(None),
               or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))
        .values(grace_ends_at=grace_ends_at, rolled_to=successor.id, changed_at=successor.changed_at)
        .execution_options(synchronize_session=False)
    )
    if cast("CursorResult[Any]", claimed).rowcount != 1:
        _rollable(await s.get(ApiKey, kid), tenant_id, kid, now, kind)  # says why (not found, revoked, rolling...)
        raise Conflict("this key is already being rolled")


# a caller's own rule checked in the mint's transaction, under the tenant's lock
# (session, now); it raises to refuse (the consumer portal's keys per subject)
MintCheck = Callable[[AsyncSession, int], Awaitable[None]]


class KeyLifecycle:
    def __init__(
        self, settings: Settings, sessions: async_sessionmaker[AsyncSession], cache: KeyCache,
        keygen: KeyGenerator, publisher: Publisher, transactions: Transactions, *,
        instant: Prepublisher | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        # short write transactions in one hop on SQLite (authserver.db.writes)
        self.transactions = transactions
        self.cache = cache
        self.keygen = keygen
        self.publisher = publisher
        self.instant = instant  # instant activation: issue pre-published keys
        self.clock = clock

    async def mint(self, tenant_id: str, spec: KeySpec, actor: Actor, *,
                   kind: str = "api", within: MintCheck | None = None,
                   stages: Stages | None = None) -> tuple[ApiKey, keys.MintedKey]:
        """A new key (``kind`` "api", or "admin" for the management API).
        ``within``: a further check in the same transaction (API keys only).
        ``stages``: mark where the time goes (AUTHSERVER_SERVER_TIMING)."""
        tk = tenant_of(self.cache, tenant_id)
        spec = key_spec(spec)
        issued = await self._issue(tk, spec, kind, instant=kind == "api")
        if stages is not None:
            stages.mark("keygen")
        row = self._row(tk, spec, kind, issued)
        details: dict[str, Any] = {"kind": kind, "alg": row.algorithm, "scopes": list(spec.scopes)}
        if isinstance(issued, Prepublished):
            details["prepublished_at"] = issued.published_at
        event = audit_event(tenant_id, actor, audit_action(kind, "mint"), row.id, details, self.clock())
        # the common case in one short transaction (one hop on SQLite); a pre-published
        # key to claim, a tenant at its cap (exact recount) or a further check under the
        # tenant's lock (``within``) takes the full one
        if not (isinstance(issued, _Fresh) and within is None and await self.transactions.run(
                functools.partial(write_mint, row=row, audit=event, settings=self.settings),
                durable=self.settings.durable_mints or kind == "admin", one_statement=True)):
            async with self.sessions() as s, s.begin():
                if kind == "api":
                    await reserve_live_key(s, await lock_tenant(s, tenant_id), self.settings, int(self.clock()))
                    if within is not None:
                        await within(s, int(self.clock()))
                await issued.claim(s)
                s.add(row)
                s.add(event)
        if stages is not None:
            stages.mark("db")
        await self.publisher.publish(row, minted=True)
        self.publisher.changed("key.mint", row)
        if stages is not None:
            stages.mark("publish")
        return row, issued.minted

    async def rehearse(self) -> None:
        """A mint's writes once, rolled back (``mintwrite.rehearse_mint``), so the
        server's first mint does not pay for compiling them and opening the
        writer's connection."""
        now = self.clock()
        row = ApiKey(id="rehearsal", tenant_id="", kind="api", name=None, subject="rehearsal", scopes=[],
                     prefix="sk_live_", last4="xxxx", algorithm=self.settings.default_algorithm, public_jwk={},
                     meta={}, rate_limits=None, created_at=int(now), expires_at=None, revoked_at=None,
                     grace_ends_at=None, rolled_from=None, rolled_to=None, changed_at=self._now_ms(), shard=None,
                     published_at=None)
        event = audit_event("", Actor("rehearsal"), audit_action("api", "mint"), row.id, {}, now)
        await self.transactions.rehearse(functools.partial(rehearse_mint, row=row, audit=event,
                                                           settings=self.settings))

    async def roll(self, tenant_id: str, kid: str, actor: Actor, *, grace_seconds: int | None = None,
                   expires_in: int | None = None, kind: str = "api") -> tuple[ApiKey, keys.MintedKey, ApiKey]:
        """A new key with the old one's attributes; the old one stays valid for the grace period."""
        checked_kid(kid)
        grace = self.settings.default_grace_seconds if grace_seconds is None else grace_seconds
        if not (0 <= grace <= self.settings.max_grace_seconds):
            raise InvalidInput(f"grace_seconds must be between 0 and {self.settings.max_grace_seconds}")
        tk = tenant_of(self.cache, tenant_id)
        async with self.sessions() as s:
            old = _rollable(await s.get(ApiKey, kid), tenant_id, kid, int(self.clock()), kind)
        if expires_in is None and old.expires_at is not None:
            expires_in = max(1, old.expires_at - old.created_at)
        spec = key_spec({
            "name": old.name, "subject": old.subject, "scopes": list(old.scopes), "expires_in": expires_in,
            "algorithm": old.algorithm, "metadata": dict(old.meta), "rate_limits": old.rate_limits,
        })
        issued = await self._issue(tk, spec, kind, instant=False)
        row = self._row(tk, spec, kind, issued, rolled_from=old.id)
        # the successor takes over the credits as they stand (the old key keeps its own until its grace ends)
        row.credits_remaining, row.credits_refill_amount = old.credits_remaining, old.credits_refill_amount
        row.credits_refill_interval, row.credits_refilled_at = old.credits_refill_interval, old.credits_refilled_at
        async with self.sessions() as s, s.begin():
            now = int(self.clock())
            tenant = await lock_tenant(s, tenant_id) if kind == "api" else None
            await _claim_roll(s, tenant_id, kid, row, now, now + grace, kind)
            if tenant is not None:  # admin keys do not count against the cap
                # after the claim: with no grace the old key is no longer live and frees its place
                await reserve_live_key(s, tenant, self.settings, now)
            locked = await s.get(ApiKey, kid, populate_existing=True)
            assert locked is not None  # we just updated it, in this transaction
            details = {"kind": kind, "alg": row.algorithm, "scopes": list(spec.scopes), "rolled_from": kid,
                       "grace_seconds": grace}
            s.add(row)
            s.add(audit_event(tenant_id, actor, audit_action(kind, "roll"), row.id, details, now))
        await self.publisher.publish(locked)
        await self.publisher.publish(row)
        self.publisher.changed("key.roll", row)
        return row, issued.minted, locked

    async def revoke(self, tenant_id: str, kid: str, actor: Actor, *, kind: str = "api",
                     keep_last_admin: bool = False) -> ApiKey:
        """Revoke now: the key leaves the JWKS at once. Revoking twice is not an error.

        ``keep_last_admin`` (the API): refuse (409) to revoke an admin key when
        no other active admin key could still manage admin keys; the CLI, which
        can always mint one, may."""
        tenant_of(self.cache, tenant_id)
        checked_kid(kid)
        async with self.sessions() as s, s.begin():
            if keep_last_admin:
                # one tenant's admin revocations in turn: two callers must not
                # each revoke "the other" last key (SQLite: BEGIN IMMEDIATE already)
                await s.get(Tenant, tenant_id, with_for_update=True)
            row = await s.get(ApiKey, kid, with_for_update=True)
            if row is None or row.tenant_id != tenant_id or row.kind != kind:
                raise no_such_key(row, tenant_id, kid, kind)
            if row.revoked_at is not None:
                return row
            now = int(self.clock())
            if keep_last_admin and _can_manage(row, now) and not await self._other_manager(s, tenant_id, kid, now):
                raise LastAdminKey(
                    "this is the tenant's last active admin key with the admin-keys:write scope: mint another "
                    "one first (POST /v1/admin-keys), or revoke it with `authserver admin-keys revoke --force`"
                )
            row.revoked_at = now
            row.changed_at = self._now_ms()
            s.add(audit_event(tenant_id, actor, audit_action(kind, "revoke"), kid, {"kind": kind}, self.clock()))
        await self.publisher.publish(row)
        self.publisher.changed("key.revoke", row)
        return row

    async def update(self, tenant_id: str, kid: str, patch: KeyPatch, actor: Actor) -> ApiKey:
        """Change what a live key carries besides its token (name, metadata,
        rate limits); every replica and gateway sees it at the next request."""
        tenant_of(self.cache, tenant_id)
        changes = patch.changes(self.clock())
        async with self.sessions() as s, s.begin():
            row = await s.get(ApiKey, kid, with_for_update=True)
            if row is None or row.tenant_id != tenant_id or row.kind != "api":
                raise no_such_key(row, tenant_id, kid, "api")
            if not row.is_published(self.clock()):
                raise Conflict(f"this key is {row.state(self.clock())}; only a live key can change")
            for column, value in changes.items():
                setattr(row, column, value)
            row.changed_at = self._now_ms()
            details = {k: v for k, v in changes.items() if k != "meta"} | ({"metadata": True} if "meta" in changes
                                                                            else {})
            s.add(audit_event(tenant_id, actor, "key.update", kid, details, self.clock()))
        await self.publisher.publish(row)
        self.publisher.changed("key.update", row)
        return row

    async def record(self, tenant_id: str, actor: Actor, action: str, target: str | None = None,
                     details: dict[str, Any] | None = None) -> None:
        """Append an audit event that is not part of a key change (e.g. a portal sign-in)."""
        async with self.sessions() as s, s.begin():
            s.add(audit_event(tenant_id, actor, action, target, details or {}, self.clock()))

    # --- helpers -----------------------------------------------------------

    async def _other_manager(self, s: AsyncSession, tenant_id: str, kid: str, now: int) -> bool:
        """Whether another active admin key of the tenant can manage admin keys."""
        active = state_filter("active", now)
        q = select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.kind == "admin", ApiKey.id != kid)
        rows = (await s.scalars(q.where(active) if active is not None else q)).all()
        return any(_can_manage(r, now) for r in rows)

    def _claims(self, tk: TenantKeys, spec: KeySpec, kind: str) -> dict[str, Any]:
        now = int(self.clock())
        info = tk.info
        return {
            "iss": info.issuer,
            "aud": info.admin_audience if kind == "admin" else info.audience,
            "sub": spec.subject,
            "iat": now,
            "scope": " ".join(spec.scopes) or None,
            "exp": now + spec.expires_in if spec.expires_in else None,
        }

    async def _issue(self, tk: TenantKeys, spec: KeySpec, kind: str, *, instant: bool) -> Prepublished | _Fresh:
        claims = self._claims(tk, spec, kind)
        algorithm = spec.algorithm or tk.info.algorithm
        if instant and self.instant is not None:
            pre = await self.instant.issue(tk.info.id, claims, algorithm)
            if pre is not None:
                return pre
        shard = None if kind == "admin" else tk.least_loaded_shard()
        prefix = ADMIN_PREFIX if kind == "admin" else tk.info.shard_prefix(shard)
        minted = await self.keygen.mint(claims, algorithm=algorithm, prefix=prefix)
        return _Fresh(minted, shard, claims["iat"])

    def _row(self, tk: TenantKeys, spec: KeySpec, kind: str, issued: Prepublished | _Fresh, *,
             rolled_from: str | None = None) -> ApiKey:
        minted = issued.minted
        claims = minted.claims
        return ApiKey(
            id=minted.kid, tenant_id=tk.info.id, kind=kind, name=spec.name,
            subject=claims["sub"], scopes=list(spec.scopes), prefix=minted.prefix,
            last4=minted.key[-4:], algorithm=spec.algorithm or tk.info.algorithm, public_jwk=minted.public_jwk,
            meta=dict(spec.metadata), rate_limits=spec.rate_limit_dicts(), created_at=claims["iat"],
            expires_at=claims.get("exp"), revoked_at=None, grace_ends_at=None,
            rolled_from=rolled_from, rolled_to=None,
            changed_at=self._now_ms(), shard=issued.shard, published_at=issued.published_at,
            **(spec.credits.columns(self.clock()) if spec.credits else {}),
        )

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)
