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
import time
from collections.abc import Awaitable
from typing import Any

import grpc
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..keycache import KeyCache
from ..ratelimit import Decision, MemoryLimiter, RedisLimiter, Window, key_bucket, strictest, subject_bucket
from ..services.credits import Credits
from .leangrpc import INVALID_ARGUMENT, PERMISSION_DENIED, GrpcError, Peer
from .nodes import NodeAccess

__all__ = ["DOMAIN", "METHOD", "RateLimitMetrics", "RateLimitServer"]

log = logging.getLogger("authserver.ratelimit")

DOMAIN = "authserver"
_OK = rls_pb2.RateLimitResponse.OK
_OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
METHOD = f"/{SERVICE}/ShouldRateLimit"  # its path on the lean transport
_PROBLEMS = {
    "rate_limited": {"type": "https://authserver.dev/problems/rate_limited", "title": "Too many requests",
                     "status": 429, "code": "rate_limited"},
    "usage_exceeded": {"type": "https://authserver.dev/problems/usage_exceeded", "title": "No credits left",
                       "status": 429, "code": "usage_exceeded"},
}
_BODIES = {code: json.dumps(p, separators=(",", ":")).encode() for code, p in _PROBLEMS.items()}
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
        # where a counted decision's time goes: all of it here (the call in to the answer
        # ready), the Redis script call's round trip (several decisions share one) in redis_seconds
        self.decision_seconds = Histogram(
            "authserver_ratelimit_decision_seconds", "Counted rate-limit decisions, the call in to the answer ready",
            registry=registry, buckets=_BUCKETS)
        self.redis_seconds = Histogram(
            "authserver_ratelimit_redis_seconds", "Rate-limit script calls to Redis, the request out to the reply in",
            registry=registry, buckets=_BUCKETS)
        # the labelled children, looked up once (labels() takes a lock and a dict per call)
        self.result = {r: self.decisions.labels(r) for r in _RESULTS}


_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05)
_RESULTS = ("allowed", "over_limit", "unknown_key", "unlimited", "credit_spent", "usage_exceeded", "refused_peer")


def _status(response: Any, limit: int, window: int, decision: Decision) -> None:
    status = response.statuses.add(code=_OK if decision.allowed else _OVER, limit_remaining=decision.remaining)
    status.duration_until_reset.seconds = decision.reset_after
    # Envoy's units are whole periods; a window of another length is reported
    # by the headers we add, so the unit here is only the nearest description
    per, unit = next(((s, u) for s, u in _UNITS if window % s == 0), (1, _UNITS[-1][1]))
    status.current_limit.requests_per_unit = max(1, limit * per // window)
    status.current_limit.unit = unit
    status.current_limit.name = f"{limit}/{window}s"


# the answer to the most common call that needs no counting (one descriptor: a
# key without limits, or unknown here), serialized once
_UNCOUNTED: bytes = rls_pb2.RateLimitResponse(
    overall_code=_OK, statuses=[rls_pb2.RateLimitResponse.DescriptorStatus(code=_OK)]).SerializeToString()
_EMPTY: bytes = rls_pb2.RateLimitResponse(overall_code=_OK).SerializeToString()  # no descriptor
_FOREIGN = "this gateway may not ask for that tenant"
# what one descriptor counts against: cost, tenant id, key id, windows, whether it spends credits
_Target = tuple[int, str, str, list[Window], bool]


def _ids(descriptor: Any) -> tuple[str, str]:
    """The descriptor's tenant and key id (empty when absent)."""
    tenant_id = kid = ""
    for e in descriptor.entries:
        if e.key == "tenant":
            tenant_id = e.value
        elif e.key == "key_id":
            kid = e.value
    return tenant_id, kid


class RateLimitServer:
    def __init__(self, cache: KeyCache, limiter: MemoryLimiter | RedisLimiter, metrics: RateLimitMetrics,
                 credits: Credits | None = None, access: NodeAccess | None = None) -> None:
        """``access`` (with TLS client certificates): a caller may only ask
        about the tenants of the node ids its certificate names."""
        self.cache = cache
        self.limiter = limiter
        self.metrics = metrics
        self.credits = credits
        self.access = access if access is not None and access.require_peer_identity else None
        self._count = metrics.result
        self._decision_seconds = metrics.decision_seconds
        if isinstance(limiter, RedisLimiter):
            limiter.on_round_trip = metrics.redis_seconds.observe

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        """The service for a gRPC server, answering with bytes it serialized
        itself (the precomputed answer when nothing was counted)."""
        return grpc.method_handlers_generic_handler(SERVICE, {"ShouldRateLimit": grpc.unary_unary_rpc_method_handler(
            self.answer, request_deserializer=rls_pb2.RateLimitRequest.FromString)})

    async def ShouldRateLimit(  # noqa: N802  (the gRPC method name)
        self, request: Any, context: grpc.aio.ServicerContext,
    ) -> Any:
        """``answer`` as a message (for callers in process)."""
        return rls_pb2.RateLimitResponse.FromString(await self.answer(request, context))

    def call(self, message: bytes, peer: Peer) -> bytes | Awaitable[bytes]:
        """The method for the lean transport (``leangrpc``): the answer at
        once when nothing is counted, else a coroutine that counts."""
        try:
            request = rls_pb2.RateLimitRequest.FromString(message)
        except DecodeError:
            raise GrpcError(INVALID_ARGUMENT, "not a RateLimitRequest") from None
        if self.access is not None:
            tenant_id = self._foreign_tenant(request, self.access.tenants_named(peer.names))
            if tenant_id is not None:
                self._refuse_peer(peer.address, tenant_id)
                raise GrpcError(PERMISSION_DENIED, _FOREIGN)
        plan = self._plan(request)
        if isinstance(plan, bytes):
            return plan
        start = time.perf_counter()
        now = self._decided_now(plan, start)
        return now if now is not None else self._counted(plan, start)

    async def answer(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        if self.access is not None:
            tenant_id = self._foreign_tenant(request, self.access.peer_tenants(context))
            if tenant_id is not None:
                self._refuse_peer(context.peer(), tenant_id)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, _FOREIGN)
        plan = self._plan(request)
        return plan if isinstance(plan, bytes) else await self._counted(plan, time.perf_counter())

    @staticmethod
    def _foreign_tenant(request: Any, allowed: set[str]) -> str | None:
        """With TLS: a descriptor's tenant that is not one the caller's certificate names a node of."""
        for descriptor in request.descriptors:
            tenant_id = next((e.value for e in descriptor.entries if e.key == "tenant"), "")
            if tenant_id not in allowed:
                return str(tenant_id)
        return None

    def _refuse_peer(self, peer: str, tenant_id: str) -> None:
        self._count["refused_peer"].inc()
        log.warning("refused a rate-limit call from %s for tenant %r: its certificate names no node "
                    "of that tenant (AUTHSERVER_XDS_NODES)", peer, tenant_id[:64])

    def _plan(self, request: Any) -> bytes | list[_Target]:
        """The answer now when there is nothing to count (the common call: one
        descriptor, a key without limits or unknown here), else what each
        descriptor counts against (its key looked up once)."""
        descriptors = request.descriptors
        if not descriptors:
            return _EMPTY
        plan: list[_Target] = []
        for descriptor in descriptors:
            # a route's cost (the descriptor's hits_addend), else the request's; 0 means 1
            cost = max(1, descriptor.hits_addend.value if descriptor.HasField("hits_addend")
                       else request.hits_addend)
            tenant_id, kid = _ids(descriptor)
            tk = self.cache.get(tenant_id)
            key = tk.published.get(kid) if tk is not None else None
            windows: list[Window] = []
            if key is None or key.kind != "api":
                self._count["unknown_key"].inc()
            else:
                windows = self._windows(tk, tenant_id, kid, key)
                if not windows:
                    self._count["unlimited"].inc()  # no limits: no round trip
            spends = key is not None and key.has_credits and self.credits is not None
            plan.append((cost, tenant_id, kid, windows, spends))
        if len(plan) == 1 and not plan[0][3] and not plan[0][4]:
            return _UNCOUNTED
        return plan

    def _decided_now(self, plan: list[_Target], start: float) -> bytes | None:
        """The answer in this loop turn when the limiter can allow the call
        without waiting on Redis (``RedisLimiter.decide_now``): one descriptor,
        no credits (they are always exact)."""
        if len(plan) != 1:
            return None
        cost, _, _, windows, spends = plan[0]
        if spends or not windows or (decisions := self.limiter.decide_now(windows, cost)) is None:
            return None
        response = rls_pb2.RateLimitResponse(overall_code=_OK)
        self._report(windows, decisions, response)
        out: bytes = response.SerializeToString()
        self._decision_seconds.observe(time.perf_counter() - start)
        return out

    async def _counted(self, plan: list[_Target], start: float) -> bytes:
        """``start``: when the call came in (perf_counter), for the decision time."""
        response = rls_pb2.RateLimitResponse(overall_code=_OK)
        refusal = None
        for cost, tenant_id, kid, windows, spends in plan:
            decision = await self._decide(windows, cost, response, not spends) if windows else None
            if decision is None:
                response.statuses.add(code=_OK)
            if decision is not None and not decision.allowed:
                refusal = "rate_limited"
            elif spends and await self._spend(tenant_id, kid, cost, response) is False:
                refusal = "usage_exceeded"
                if windows:  # a refused call counts against no window
                    await self.limiter.undo(windows, cost)
        if refusal is not None:
            response.overall_code = _OVER
            response.raw_body = _BODIES[refusal]
            response.response_headers_to_add.add(key="content-type", value="application/problem+json")
        out: bytes = response.SerializeToString()
        self._decision_seconds.observe(time.perf_counter() - start)
        return out

    async def _spend(self, tenant_id: str, kid: str, cost: int, response: Any) -> bool:
        """Spend the key's credits (after its rate limits let the call through):
        False when none are left."""
        assert self.credits is not None
        state = await self.credits.spend(tenant_id, kid, cost)
        self._count["credit_spent" if state.allowed else "usage_exceeded"].inc()
        if state.remaining is not None:
            response.response_headers_to_add.add(key="x-credits-remaining", value=str(state.remaining))
        return state.allowed

    @staticmethod
    def _windows(tk: Any, tenant_id: str, kid: str, key: Any) -> list[Window]:
        """The key's own windows and its subject's."""
        windows: list[Window] = []
        if key.rate_limits:
            own = key_bucket(tenant_id, kid)
            windows = [(own, int(r["limit"]), int(r["window_seconds"])) for r in key.rate_limits]
        shared = tk.subject_limits.get(key.subject) if tk.subject_limits else None
        if shared:
            windows += [(subject_bucket(tenant_id, key.subject), lim, w) for lim, w in shared]
        return windows

    async def _decide(self, windows: list[Window], cost: int, response: Any, local: bool) -> Decision:
        """``local``: the limiter may allow without waiting on Redis (not with credits)."""
        return self._report(windows, await self.limiter.hit_many(windows, cost, local), response)

    def _report(self, windows: list[Window], decisions: list[Decision], response: Any) -> Decision:
        """The strictest window's status and headers in ``response``."""
        chosen = strictest(decisions) if len(decisions) > 1 else decisions[0]
        i = decisions.index(chosen)
        _status(response, windows[i][1], windows[i][2], chosen)
        add = response.response_headers_to_add.add
        add(key="ratelimit-limit", value=str(chosen.limit))
        add(key="ratelimit-remaining", value=str(chosen.remaining))
        add(key="ratelimit-reset", value=str(chosen.reset_after))
        if not chosen.allowed:
            add(key="retry-after", value=str(chosen.retry_after))
        self._count["allowed" if chosen.allowed else "over_limit"].inc()
        return chosen
