"""RFC 7662 introspection, judged as the tenant's gateways would judge the key."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import keys

from ..db.models import ApiKey
from ..keycache import KeyCache, claimed_kid
from ..ratelimit import MemoryLimiter, RedisLimiter, key_bucket, subject_bucket
from .common import tenant_of
from .credits import Credits

__all__ = ["Introspector"]

_WHY = {"revoked": "REVOKED", "expired": "EXPIRED", "rolled": "EXPIRED"}


class Introspector:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], cache: KeyCache,
                 clock: Callable[[], float] = time.time, limiter: MemoryLimiter | RedisLimiter | None = None) -> None:
        self.sessions = sessions
        self.cache = cache
        self.clock = clock
        self.limiter = limiter  # where gateways' calls are counted (gateways.ratelimit)

    async def introspect(self, tenant_id: str, token: str) -> dict[str, Any]:
        """The RFC 7662 answer, plus a ``status`` for the operator (VALID,
        RATE_LIMITED, EXPIRED, REVOKED, INVALID) and, for a key with limits
        (its own, or its subject's shared ones), each window's state as
        gateways count it. A key is valid only with the
        exact prefix it was minted with."""
        tk = tenant_of(self.cache, tenant_id)
        try:
            verified, published = tk.verify_api(token)
        except keys.ExpiredToken:
            return {"active": False, "status": "EXPIRED"}
        except keys.UnknownKeyId:
            return {"active": False, "status": await self._why_unknown(tenant_id, token)}
        except keys.KeyCoreError:
            return {"active": False, "status": "INVALID"}
        claims = verified.claims
        answer: dict[str, Any] = {
            "active": True,
            "status": "VALID",
            "token_type": "api_key",
            "kid": verified.kid,
            **{k: claims[k] for k in ("iss", "aud", "sub", "iat", "exp", "jti", "scope") if k in claims},
            "rate_limits": list(published.rate_limits),
            "metadata": published.meta,
        }
        if published.removed_at is not None:
            answer["published_until"] = published.removed_at
        if published.has_credits:
            async with self.sessions() as s:
                row = await s.get(ApiKey, verified.kid)
            answer["credits"] = Credits.view(row, self.clock()) if row is not None else None
            if answer["credits"] and answer["credits"]["remaining"] == 0:
                answer["status"] = "USAGE_EXCEEDED"  # still a valid key: its gateway refuses it until a refill
        if published.rate_limits and self.limiter is not None:
            state = [(r, await self.limiter.peek(key_bucket(tenant_id, verified.kid), r["limit"], r["window_seconds"]))
                     for r in published.rate_limits]
            answer["rate_limit_state"] = [{**r, "remaining": d.remaining, "reset_after": d.reset_after}
                                          for r, d in state]
            if any(d.remaining == 0 for _, d in state):
                answer["status"] = "RATE_LIMITED"  # still a valid key: its gateway refuses it for now
        shared = tk.subject_limits.get(published.subject)
        if shared and self.limiter is not None:  # the limits all keys of its subject share
            bucket = subject_bucket(tenant_id, published.subject)
            subject_state = [(lim, w, await self.limiter.peek(bucket, lim, w)) for lim, w in shared]
            answer["subject_rate_limit_state"] = [
                {"limit": lim, "window_seconds": w, "remaining": d.remaining, "reset_after": d.reset_after}
                for lim, w, d in subject_state]
            if any(d.remaining == 0 for _, _, d in subject_state):
                answer["status"] = "RATE_LIMITED"
        return answer

    async def _why_unknown(self, tenant_id: str, token: str) -> str:
        """A kid we do not publish: revoked or expired (the row says so), else invalid."""
        try:
            kid = claimed_kid(token)
            prefix = keys.parse_key_string(token).prefix
        except keys.KeyCoreError:
            return "INVALID"
        async with self.sessions() as s:
            row = await s.get(ApiKey, kid) if len(kid) <= 64 else None
        if row is None or row.tenant_id != tenant_id or row.kind != "api" or row.prefix != prefix:
            return "INVALID"
        return _WHY.get(row.state(self.clock()), "INVALID")

    # --- for an operator: why (``authserver keys verify``) -----------------

    async def explain(self, tenant_id: str, token: str) -> tuple[dict[str, Any], str]:
        """The introspection answer and, in words, why: the check that failed,
        or when the key stopped being valid. Never repeats the token."""
        answer = await self.introspect(tenant_id, token)
        if answer["status"] == "VALID":
            exp = answer.get("exp")
            until = f"expires {_when(exp)}" if exp else "does not expire"
            return answer, f"signature verified with published key {answer['kid']}; {until}"
        failure: keys.KeyCoreError | None = None
        try:
            tenant_of(self.cache, tenant_id).verify_api(token)
        except keys.UnknownKeyId:
            pass  # the row says why
        except keys.KeyCoreError as exc:
            failure = exc
        try:
            kid = claimed_kid(token)
            prefix = keys.parse_key_string(token).prefix
        except keys.KeyCoreError as exc:
            return answer, f"{exc.code}: {exc}"
        async with self.sessions() as s:
            row = await s.get(ApiKey, kid) if len(kid) <= 64 else None
        if row is not None and row.tenant_id == tenant_id and row.kind == "api" and row.prefix == prefix:
            state = row.state(self.clock())
            if state == "revoked":
                return answer, f"key {kid} was revoked {_when(row.revoked_at)}"
            if state == "rolled":
                ended = _when(row.grace_ends_at)
                return answer, f"key {kid} was rolled to {row.rolled_to}; its grace period ended {ended}"
            if state == "expired":
                return answer, f"key {kid} expired {_when(row.expires_at)}"
        if failure is not None:
            return answer, f"{failure.code}: {failure}"
        if row is None:
            return answer, f"no key with id {kid} in this database"
        if row.tenant_id != tenant_id:
            return answer, f"key {kid} belongs to tenant {row.tenant_id!r}, not {tenant_id!r} (use --tenant)"
        if row.kind != "api":
            return answer, f"key {kid} is an admin key: it authenticates the management API, gateways refuse it"
        if row.prefix != prefix:
            return answer, f"wrong prefix {prefix!r}: key {kid} was minted with {row.prefix!r}"
        return answer, f"key {kid} is not published"


def _when(ts: int | None) -> str:
    return "at " + time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts)) if ts else "(unknown time)"
