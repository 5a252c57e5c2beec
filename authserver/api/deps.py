"""Request helpers shared by controllers: the Core, the admin credential."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Request

import keys

from ..core import Core
from ..errors import Forbidden, RateLimited, Unauthorized
from ..keycache import TenantKeys
from ..services import Actor


def core_of(request: Request) -> Core:
    return request.app.state.core


def client_addr(request: Request) -> str | None:
    return request.client.host if request.client else None


@dataclass(frozen=True, slots=True)
class Admin:
    tenant: TenantKeys
    kid: str
    scopes: frozenset[str]
    actor: Actor

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this admin key lacks the {scope!r} scope")


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    return token.strip()


def authenticate_admin(request: Request) -> Admin:
    """Verify the tenant admin key. Any failure is the same 401."""
    core = core_of(request)
    token = bearer_token(request)
    try:
        tenant, verified = core.cache.verify_admin(token)
    except keys.KeyCoreError as exc:
        core.metrics.auth_failures.labels(exc.code).inc()
        raise Unauthorized() from None
    return Admin(tenant, verified.kid, verified.scopes, Actor(verified.kid, client_addr(request)))


def _auth_failure_key(request: Request) -> str:
    return f"authfail:{client_addr(request) or 'unknown'}"


async def refuse_if_failing(request: Request) -> None:
    """429 for a client address over its budget of failed authentications."""
    core = core_of(request)
    limit = core.settings.rate_limit_auth_failures_per_minute
    if limit:
        d = await core.limiter.peek(_auth_failure_key(request), limit, 60)
        if not d.allowed:
            core.metrics.rate_limited.labels("auth_failures").inc()
            raise RateLimited(d.retry_after, headers=d.headers())


async def count_auth_failure(request: Request) -> None:
    core = core_of(request)
    limit = core.settings.rate_limit_auth_failures_per_minute
    if limit:
        await core.limiter.hit(_auth_failure_key(request), limit, 60)


async def admin_for(request: Request, bucket: str = "admin") -> Admin:
    """Authenticate the admin key under the rate limits of issue #4:
    failed authentications per client address, then calls per admin key."""
    core = core_of(request)
    s = core.settings
    await refuse_if_failing(request)
    try:
        admin = authenticate_admin(request)
    except Unauthorized:
        await count_auth_failure(request)
        raise
    limit = s.rate_limit_introspect_per_minute if bucket == "introspect" else s.rate_limit_admin_per_minute
    if limit:
        d = await core.limiter.hit(f"{bucket}:{admin.kid}", limit, 60)
        request.state.ratelimit = d
        if not d.allowed:
            core.metrics.rate_limited.labels(bucket).inc()
            raise RateLimited(d.retry_after, headers=d.headers())
    return admin


async def add_ratelimit_headers(message, scope) -> None:
    """before_send hook: RateLimit-* headers on every rate-limited answer."""
    if message["type"] != "http.response.start":
        return
    decision = scope.get("state", {}).get("ratelimit")
    if decision is not None:
        present = {k.lower() for k, _ in message.get("headers", [])}
        extra = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items() if k.lower().encode() not in present]
        message["headers"] = list(message.get("headers", [])) + extra
