"""Sliding-window rate limits, shared by replicas through Redis.

Sliding window counter (as Cloudflare and most gateways do it): the count in
the current fixed window plus the previous window's count weighted by how much
of it still overlaps the sliding window. Two integers per key and window, one
round trip (a Lua script, atomic), no per-request log.

Without Redis, or while Redis is down, an in-process limiter with the same
algorithm takes over: limits then hold per replica rather than globally.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

log = logging.getLogger("authserver.ratelimit")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the current window ends
    retry_after: int  # seconds to wait when refused

    def headers(self) -> dict[str, str]:
        h = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }
        if not self.allowed:
            h["Retry-After"] = str(self.retry_after)
        return h


def _decide(prev: int, cur: int, limit: int, window: int, now: float, counted: bool) -> Decision:
    elapsed = now % window
    weight = (window - elapsed) / window
    estimate = prev * weight + cur
    allowed = estimate <= limit if counted else estimate < limit
    reset_after = max(1, math.ceil(window - elapsed))
    retry_after = reset_after
    if not allowed and prev:
        # the previous window's weight shrinks linearly: when does the estimate fit?
        excess = estimate - limit + (0 if counted else 1)
        retry_after = max(1, min(reset_after, math.ceil(excess / prev * window)))
    remaining = max(0, int(limit - estimate))
    return Decision(allowed, limit, remaining, reset_after, retry_after)


class MemoryLimiter:
    def __init__(self, clock: Callable[[], float], max_entries: int = 200_000) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._counts: dict[tuple[str, int, int], int] = {}  # (key, window, index) -> count

    async def hit(self, key: str, limit: int, window: int, cost: int = 1) -> Decision:
        now = self.clock()
        idx = int(now // window)
        cur = self._counts.get((key, window, idx), 0) + cost
        self._counts[(key, window, idx)] = cur
        if len(self._counts) > self.max_entries:
            self._forget_old(now)
        return _decide(self._counts.get((key, window, idx - 1), 0), cur, limit, window, now, counted=True)

    async def peek(self, key: str, limit: int, window: int) -> Decision:
        now = self.clock()
        idx = int(now // window)
        prev = self._counts.get((key, window, idx - 1), 0)
        return _decide(prev, self._counts.get((key, window, idx), 0), limit, window, now, counted=False)

    def _forget_old(self, now: float) -> None:
        """Windows older than the previous one can no longer count."""
        self._counts = {k: v for k, v in self._counts.items() if k[2] >= int(now // k[1]) - 1}


_HIT = """
local cur = redis.call('INCRBY', KEYS[1], ARGV[1])
if cur == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
return {prev, cur}
"""


class RedisLimiter:
    """Shared limits; falls back to ``fallback`` when Redis errors."""

    def __init__(self, redis: Redis, clock: Callable[[], float], namespace: str, fallback: MemoryLimiter,
                 on_degraded: Callable[[], None] | None = None) -> None:
        self.redis = redis
        self.clock = clock
        self.ns = namespace
        self.fallback = fallback
        self.on_degraded = on_degraded
        self._script = redis.register_script(_HIT)
        self._degraded = False

    def _keys(self, key: str, window: int, now: float) -> tuple[str, str]:
        idx = int(now // window)
        return f"{self.ns}:rl:{window}:{key}:{idx}", f"{self.ns}:rl:{window}:{key}:{idx - 1}"

    async def hit(self, key: str, limit: int, window: int, cost: int = 1) -> Decision:
        now = self.clock()
        try:
            prev, cur = await self._script(keys=self._keys(key, window, now), args=[cost, 2 * window + 1])
        except Exception as exc:  # redis down: limit locally, say so once
            self._note_degraded(exc)
            return await self.fallback.hit(key, limit, window, cost)
        self._degraded = False
        return _decide(int(prev), int(cur), limit, window, now, counted=True)

    async def peek(self, key: str, limit: int, window: int) -> Decision:
        now = self.clock()
        try:
            cur, prev = await self.redis.mget(list(self._keys(key, window, now)))
        except Exception as exc:
            self._note_degraded(exc)
            return await self.fallback.peek(key, limit, window)
        return _decide(int(prev or 0), int(cur or 0), limit, window, now, counted=False)

    def _note_degraded(self, exc: Exception) -> None:
        if not self._degraded:
            log.warning("redis unavailable for rate limits, limiting per replica: %s", type(exc).__name__)
            self._degraded = True
        if self.on_degraded:
            self.on_degraded()
