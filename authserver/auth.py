"""Admin authentication, for the management API and the portal alike.

One flow (issue #4's rate limits included), as Litestar guards and a dependency:

1. verify the admin key (signature, claims, exact ``sk_admin_`` prefix, still
   published); any failure is the same 401, counted against the client
   address's budget of failed authentications, and 429 once over it. A key
   that verifies is never refused by that budget: behind a shared proxy
   address, someone else's failures must not lock out a valid key;
2. 429 if the admin key is over its budget of calls;
3. per handler, a guard checks the scope (403).

The client address is resolved through ``AUTHSERVER_TRUSTED_PROXIES``
(``clientaddr``), once per request, for the budget and the audit log alike.
The API reads the key from ``Authorization: Bearer``; the portal from its
session (re-checked against the live cache), and shares steps 2 and 3.
The verified admin is kept in the connection state, so guards and the
``admin`` dependency authenticate once per request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, cast

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

import keys

from .clientaddr import resolve_client
from .core import Core
from .errors import Forbidden, RateLimited, Unauthorized
from .keycache import TenantKeys
from .schemas import ADMIN_KEYS_WRITE, KEYS_READ, KEYS_WRITE
from .services import Actor

__all__ = [
    "ADMIN_WRITE",
    "READ",
    "WRITE",
    "Admin",
    "admin_from_bearer",
    "admin_from_session",
    "charge_consumer",
    "client_addr",
    "core_of",
    "count_auth_failure",
    "live_admin_key",
    "provide_admin",
    "provide_introspection_admin",
    "requires",
    "verify_admin_key",
]

# the scopes are stated in authserver.schemas (ADMIN_SCOPES); the guards name them here
READ = KEYS_READ
WRITE = KEYS_WRITE
ADMIN_WRITE = ADMIN_KEYS_WRITE
_STATE_KEY = "admin"
_ADDR_KEY = "client_addr"
_UNSET = object()
Connection = ASGIConnection[Any, Any, Any, Any]


@dataclass(frozen=True, slots=True)
class Admin:
    tenant: TenantKeys
    kid: str
    scopes: frozenset[str]
    actor: Actor

    @property
    def tenant_id(self) -> str:
        return self.tenant.info.id

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this admin key lacks the {scope!r} scope")


def core_of(connection: Connection) -> Core:
    core: Core = connection.app.state.core
    return core


def client_addr(connection: Connection) -> str | None:
    """The client's address: the peer, or what trusted proxies say it forwarded."""
    cached = connection.state.get(_ADDR_KEY, _UNSET)
    if cached is not _UNSET:
        return cast("str | None", cached)
    headers = connection.headers
    addr = resolve_client(
        connection.client.host if connection.client else None,
        headers.getall("x-forwarded-for", []), headers.getall("forwarded", []),
        core_of(connection).settings.trusted_proxy_networks,
    )
    connection.state[_ADDR_KEY] = addr
    return addr


# --- failed authentications, per client address -------------------------------

async def count_auth_failure(connection: Connection) -> None:
    """Count one failed authentication of the client address; 429 once it is
    over its budget (the caller answers 401 otherwise)."""
    core = core_of(connection)
    limit = core.settings.rate_limit_auth_failures_per_minute
    if limit:
        d = await core.limiter.hit(f"authfail:{client_addr(connection) or 'unknown'}", limit, 60)
        if not d.allowed:
            core.metrics.rate_limited.labels("auth_failures").inc()
            raise RateLimited(d.retry_after, headers=d.headers())


def verify_admin_key(core: Core, token: str) -> tuple[TenantKeys, keys.VerifiedKey] | None:
    """The tenant and verified admin key, or None (the reason only goes to metrics)."""
    try:
        return core.cache.verify_admin(token)
    except keys.KeyCoreError as exc:
        core.metrics.auth_failures.labels(exc.code).inc()
        return None


# --- calls, per admin key -----------------------------------------------------

async def _charge(connection: Connection, bucket: str, kid: str) -> None:
    """Count one call against the admin key's budget (``bucket``: admin or introspect)."""
    core = core_of(connection)
    s = core.settings
    limit = s.rate_limit_introspect_per_minute if bucket == "introspect" else s.rate_limit_admin_per_minute
    if limit:
        d = await core.limiter.hit(f"{bucket}:{kid}", limit, 60)
        connection.state.ratelimit = d  # RateLimit-* headers (add_ratelimit_headers)
        if not d.allowed:
            core.metrics.rate_limited.labels(bucket).inc()
            raise RateLimited(d.retry_after, headers=d.headers())


# --- the two ways in ------------------------------------------------------------

def _bearer_token(connection: Connection) -> str:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    return token.strip()


async def admin_from_bearer(connection: Connection, bucket: str = "admin") -> Admin:
    """The API's admin: ``Authorization: Bearer <admin key>``, once per request."""
    cached = connection.state.get(_STATE_KEY)
    if isinstance(cached, Admin):
        return cached
    core = core_of(connection)
    try:
        found = verify_admin_key(core, _bearer_token(connection))
    except Unauthorized:
        found = None
    if found is None:
        await count_auth_failure(connection)
        raise Unauthorized()
    tenant, verified = found
    await _charge(connection, bucket, verified.kid)
    admin = Admin(tenant, verified.kid, verified.scopes, Actor(verified.kid, client_addr(connection)))
    connection.state[_STATE_KEY] = admin
    return admin


def live_admin_key(core: Core, tenant_id: str, kid: str) -> TenantKeys | None:
    """The tenant, if ``kid`` is still a published (not revoked, not expired) admin key of it."""
    tenant = core.cache.tenant_of_admin_key(kid)
    published = tenant.published.get(kid) if tenant is not None else None
    if (
        tenant is None or published is None or tenant.info.id != tenant_id or published.kind != "admin"
        or (published.removed_at is not None and published.removed_at <= core.clock())
    ):
        return None
    return tenant


async def charge_consumer(connection: Connection, tenant_id: str, subject: str) -> None:
    """A consumer portal request: counted like an admin call, against the consumer's own budget."""
    await _charge(connection, "consumer", hashlib.sha256(f"{tenant_id}\0{subject}".encode()).hexdigest()[:32])


async def admin_from_session(connection: Connection, tenant_id: str, kid: str) -> Admin | None:
    """The portal's admin: the session's key if it is still a live admin key of
    that tenant (None: end the session), charged like an API call."""
    cached = connection.state.get(_STATE_KEY)
    if isinstance(cached, Admin):
        return cached
    core = core_of(connection)
    tenant = live_admin_key(core, tenant_id, kid)
    if tenant is None:
        return None
    published = tenant.published[kid]
    await _charge(connection, "admin", kid)
    admin = Admin(tenant, kid, frozenset(published.scopes), Actor(kid, client_addr(connection)))
    connection.state[_STATE_KEY] = admin
    return admin


# --- for handlers -----------------------------------------------------------------

def requires(scope: str) -> Guard:
    """A guard: the bearer's admin key must carry ``scope``."""

    async def guard(connection: Connection, _: BaseRouteHandler) -> None:
        (await admin_from_bearer(connection)).require(scope)

    guard.__name__ = f"requires_{scope.replace(':', '_')}"
    return guard


async def _admin(request: Request[Any, Any, Any]) -> Admin:
    return await admin_from_bearer(request)


async def _introspection_admin(request: Request[Any, Any, Any]) -> Admin:
    return await admin_from_bearer(request, "introspect")


provide_admin = Provide(_admin)
provide_introspection_admin = Provide(_introspection_admin)
