"""Envoy's global rate-limit service (``envoy.service.ratelimit.v3``) for
per-key limits: each verified API key's ``rate_limits`` (several windows),
counted in Redis with an atomic sliding window shared by every replica.

Envoy's ``ratelimit`` filter (after ``jwt_authn`` and the gate, see
``envoy.py``) sends one descriptor per request: ``[("tenant", T), ("key_id",
KID)]``, the key id being the one the gateway verified. The limits are read
from the key cache on every call, so a ``PATCH`` is in effect at the next
request. A key's subject (its ``sub``) may have limits shared by all its keys
(``services.subjects``): the key's windows and the subject's are checked in
one atomic Redis call, and a refused call counts in none of them. A key
without limits, whose subject has none either, is answered at once, without
a Redis round trip. Credits are spent after the windows let a call through;
a call then refused for want of credits is taken back from the windows. A
descriptor's ``hits_addend`` (a route's cost, see
``envoy.py``) is what the call counts against the windows and the credits.
An unknown key id (revoked since, another tenant's) is not limited here:
refusing it is the gate's job. Refusals carry RateLimit headers, Retry-After
and a problem+json body (code ``rate_limited``); allowed answers carry the
RateLimit headers of the strictest window.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..keycache import KeyCache
from ..ratelimit import Decision, MemoryLimiter, RedisLimiter, Window, key_bucket, strictest, subject_bucket
from ..services.credits import Credits
from .nodes import NodeAccess

__all__ = ["DOMAIN", "RateLimitMetrics", "RateLimitServer"]

log = logging.getLogger("authserver.ratelimit")

DOMAIN = "authserver"
_OK = rls_pb2.RateLimitResponse.OK
_OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
_PROBLEMS = {
    "rate_limited": {"type": "https://authserver.dev/problems/rate_limited", "title": "Too many requests",
                     "status": 429, "code": "rate_limited"},
    "usage_exceeded": {"type": "https://authserver.dev/problems/usage_exceeded", "title": "No credits left",
                       "status": 429, "code": "usage_exceeded"},
}
_UNITS = ((86400, rls_pb2.RateLimitResponse.RateLimit.DAY), (3600, rls_pb2.RateLimitResponse.RateLimit.HOUR),
          (60, rls_pb2.RateLimitResponse.RateLimit.MINUTE), (1, rls_pb2.RateLimitResponse.RateLimit.SECOND))


class RateLimitMetrics:
    def __init__(self, registry: CollectorRegistry, shared: bool) -> None:
        self.decisions = Counter("authserver_ratelimit_decisions", "Rate-limit decisions for gateways",
                                 ["result"], registry=registry)
        self.shared = Gauge("authserver_ratelimit_shared",
                            "1 when per-key limits are counted in Redis for every replica, 0 per replica",
                            registry=registry)
        self.shared.set(1 if shared else 0)


def _header(name: str, value: str) -> Any:
    return base_pb2.HeaderValue(key=name, value=value)


def _status(limit: int, window: int, decision: Decision) -> Any:
    status = rls_pb2.RateLimitResponse.DescriptorStatus(
        code=_OK if decision.allowed else _OVER, limit_remaining=decision.remaining,
    )
    status.duration_until_reset.seconds = decision.reset_after
    # Envoy's units are whole periods; a window of another length is reported
    # by the headers we add, so the unit here is only the nearest description
    per, unit = next(((s, u) for s, u in _UNITS if window % s == 0), (1, _UNITS[-1][1]))
    status.current_limit.requests_per_unit = max(1, limit * per // window)
    status.current_limit.unit = unit
    status.current_limit.name = f"{limit}/{window}s"
    return status


class RateLimitServer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, cache: KeyCache, limiter: MemoryLimiter | RedisLimiter, metrics: RateLimitMetrics,
                 credits: Credits | None = None, access: NodeAccess | None = None) -> None:
        """``access`` (with TLS client certificates): a caller may only ask
        about the tenants of the node ids its certificate names."""
        self.cache = cache
        self.limiter = limiter
        self.metrics = metrics
        self.credits = credits
        self.access = access if access is not None and access.require_peer_identity else None

    async def ShouldRateLimit(  # noqa: N802  (the gRPC method name)
        self, request: Any, context: grpc.aio.ServicerContext,
    ) -> Any:
        if self.access is not None:
            await self._admit(request, context)
        response = rls_pb2.RateLimitResponse(overall_code=_OK)
        refusal = None
        for descriptor in request.descriptors:
            # a route's cost (the descriptor's hits_addend), else the request's; 0 means 1
            cost = max(1, descriptor.hits_addend.value if descriptor.HasField("hits_addend")
                       else request.hits_addend)
            entries = {e.key: e.value for e in descriptor.entries}
            tenant_id, kid = entries.get("tenant", ""), entries.get("key_id", "")
            decision, windows = await self._decide(tenant_id, kid, cost, response)
            if decision is not None and not decision.allowed:
                refusal = "rate_limited"
            elif await self._spend(tenant_id, kid, cost, response) is False:
                refusal = "usage_exceeded"
                if windows:  # a refused call counts against no window
                    await self.limiter.undo(windows, cost)
        if refusal is not None:
            response.overall_code = _OVER
            response.raw_body = json.dumps(_PROBLEMS[refusal], separators=(",", ":")).encode()
            response.response_headers_to_add.append(_header("content-type", "application/problem+json"))
        return response

    async def _admit(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        """TLS: every descriptor's tenant is one the caller's certificate names a node of."""
        assert self.access is not None
        allowed = self.access.peer_tenants(context)
        for descriptor in request.descriptors:
            tenant_id = next((e.value for e in descriptor.entries if e.key == "tenant"), "")
            if tenant_id not in allowed:
                self.metrics.decisions.labels("refused_peer").inc()
                log.warning("refused a rate-limit call from %s for tenant %r: its certificate names no node "
                            "of that tenant (AUTHSERVER_XDS_NODES)", context.peer(), tenant_id[:64])
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "this gateway may not ask for that tenant")

    async def _spend(self, tenant_id: str, kid: str, cost: int, response: Any) -> bool | None:
        """Spend the key's credits (after its rate limits let the call through):
        False when none are left, None when the key has none to count."""
        tk = self.cache.get(tenant_id)
        key = tk.published.get(kid) if tk is not None else None
        if key is None or not key.has_credits or self.credits is None:
            return None
        state = await self.credits.spend(tenant_id, kid, cost)
        self.metrics.decisions.labels("credit_spent" if state.allowed else "usage_exceeded").inc()
        if state.remaining is not None:
            response.response_headers_to_add.append(_header("x-credits-remaining", str(state.remaining)))
        return state.allowed

    async def _decide(self, tenant_id: str, kid: str, cost: int, response: Any) -> tuple[Decision | None, list[Window]]:
        tk = self.cache.get(tenant_id)
        key = tk.published.get(kid) if tk is not None else None
        if key is None or key.kind != "api":
            self.metrics.decisions.labels("unknown_key").inc()
            response.statuses.append(rls_pb2.RateLimitResponse.DescriptorStatus(code=_OK))
            return None, []
        own = key_bucket(tenant_id, kid)
        windows: list[Window] = [(own, int(r["limit"]), int(r["window_seconds"])) for r in key.rate_limits]
        shared = tk.subject_limits.get(key.subject) if tk is not None else None
        if shared:
            windows += [(subject_bucket(tenant_id, key.subject), lim, w) for lim, w in shared]
        if not windows:  # no limits: no round trip
            self.metrics.decisions.labels("unlimited").inc()
            response.statuses.append(rls_pb2.RateLimitResponse.DescriptorStatus(code=_OK))
            return None, []
        decisions = await self.limiter.hit_many(windows, cost)
        chosen = strictest(decisions)
        i = decisions.index(chosen)
        response.statuses.append(_status(windows[i][1], windows[i][2], chosen))
        for name, value in chosen.headers().items():
            response.response_headers_to_add.append(_header(name.lower(), value))
        self.metrics.decisions.labels("allowed" if chosen.allowed else "over_limit").inc()
        return chosen, windows
