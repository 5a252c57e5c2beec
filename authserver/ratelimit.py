"""Sliding-window rate limits, shared by replicas through Redis.

Sliding window counter (as Cloudflare and most gateways do it): the count in
the current fixed window plus the previous window's count weighted by how much
of it still overlaps the sliding window. Two integers per key and window, one
round trip (a Lua script, atomic), no per-request log.

Without Redis, or while Redis is down, an in-process limiter with the same
algorithm takes over: limits then hold per replica rather than globally.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Decision", "MemoryLimiter", "RedisLimiter", "Window", "key_bucket", "strictest", "subject_bucket"]

from redis.asyncio import Redis

from .redisscript import for_client

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


def key_bucket(tenant_id: str, kid: str) -> str:
    """Where an API key's own limits are counted (the gateway service and introspection)."""
    return f"key:{tenant_id}:{kid}"


def subject_bucket(tenant_id: str, subject: str) -> str:
    """Where the limits shared by every key of one subject are counted."""
    return f"sub:{tenant_id}:{subject}"


# (bucket, limit, window seconds): one sliding window of one bucket
Window = tuple[str, int, int]


def _estimate(prev: int, cur: int, window: int, now: float) -> float:
    return prev * (window - now % window) / window + cur


def strictest(decisions: list[Decision]) -> Decision:
    """The decision to report for several windows: a refusing one (the longest
    wait), else the one with the fewest requests left."""
    refused = [d for d in decisions if not d.allowed]
    if refused:
        return max(refused, key=lambda d: d.retry_after)
    return min(decisions, key=lambda d: (d.remaining, -d.reset_after))


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

    async def hit_all(self, key: str, limits: list[tuple[int, int]], cost: int = 1) -> list[Decision]:
        """Count ``cost`` against every ``(limit, window)`` of ``key`` only if
        all of them have room (a refused request counts against none, so an
        overloaded key still gets its full rate): one decision per window."""
        return await self.hit_many([(key, lim, w) for lim, w in limits], cost)

    async def hit_many(self, windows: list[Window], cost: int = 1) -> list[Decision]:
        """``hit_all`` over windows of several buckets at once (a key's own and
        its subject's): counted in all only if all have room."""
        now = self.clock()
        counts = [(self._counts.get((b, w, int(now // w) - 1), 0), self._counts.get((b, w, int(now // w)), 0))
                  for b, _, w in windows]
        ok = all(_estimate(p, c, w, now) + cost <= lim for (p, c), (_, lim, w) in zip(counts, windows, strict=True))
        if ok:
            for i, (b, _, w) in enumerate(windows):
                idx = (b, w, int(now // w))
                self._counts[idx] = self._counts.get(idx, 0) + cost  # a bucket listed twice counts twice
                counts[i] = (counts[i][0], self._counts[idx])
            if len(self._counts) > self.max_entries:
                self._forget_old(now)
        return [_decide(p, c + (0 if ok else cost), lim, w, now, counted=True)
                for (p, c), (_, lim, w) in zip(counts, windows, strict=True)]

    async def undo(self, windows: list[Window], cost: int = 1) -> None:
        """Take back a counted call that was refused afterwards (no credits left)."""
        now = self.clock()
        for b, _, w in windows:
            idx = (b, w, int(now // w))
            if self._counts.get(idx, 0) >= cost:
                self._counts[idx] -= cost

    def _forget_old(self, now: float) -> None:
        """Windows older than the previous one can no longer count."""
        self._counts = {k: v for k, v in self._counts.items() if k[2] >= int(now // k[1]) - 1}


_HIT = """
local cur = redis.call('INCRBY', KEYS[1], ARGV[1])
if cur == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
return {prev, cur}
"""


# Every window at once, whichever bucket it counts (a key's own windows and
# its subject's): check all, count in all only if all have room, so a refused
# call is counted nowhere. Several calls' checks go in one script call (those
# made in the same event-loop turn): each is checked and counted in turn, as if
# alone, and the whole script is atomic across replicas.
# KEYS: cur_1, prev_1, cur_2, prev_2, ... for every call in order;
# ARGV: per call: now, cost, n (its windows), limit_1, window_1, ..., limit_n, window_n
# Returns per call: ok, prev_1, cur_1, ..., prev_n, cur_n (cur as found: before counting)
_HIT_BATCH = """
local out, a, k = {}, 1, 0
while a <= #ARGV do
  local now, cost, n = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  local base, ok = #out + 1, 1
  out[base] = 0
  for i = 1, n do
    local cur = tonumber(redis.call('GET', KEYS[k+2*i-1]) or '0')
    local prev = tonumber(redis.call('GET', KEYS[k+2*i]) or '0')
    local limit, window = tonumber(ARGV[a+1+2*i]), tonumber(ARGV[a+2+2*i])
    if prev * (window - now % window) / window + cur + cost > limit then ok = 0 end
    out[base+2*i-1], out[base+2*i] = prev, cur
  end
  if ok == 1 then
    for i = 1, n do
      local c = redis.call('INCRBY', KEYS[k+2*i-1], cost)
      if c == cost then redis.call('EXPIRE', KEYS[k+2*i-1], 2 * tonumber(ARGV[a+2+2*i]) + 1) end
      out[base+2*i] = c - cost
    end
  end
  out[base] = ok
  k, a = k + 2*n, a + 3 + 2*n
end
return out
"""


# Take back a counted call: never below zero, never creating a key (one without
# an expiry would stay forever). KEYS: cur_1, cur_2, ...; ARGV: cost
_UNDO = """
local cost = tonumber(ARGV[1])
for i = 1, #KEYS do
  local v = tonumber(redis.call('GET', KEYS[i]) or '0')
  if v >= cost then redis.call('DECRBY', KEYS[i], cost) end
end
return 0
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
        self._script_batch = redis.register_script(_HIT_BATCH)
        self._script_undo = redis.register_script(_UNDO)
        # the batch script's own connection (plain TCP), else redis-py's: see redisscript
        self._batch_conn = for_client(redis, _HIT_BATCH)
        self._degraded = False
        # calls waiting for the next batch: (windows, cost, now, their answer)
        self._pending: list[tuple[list[Window], int, float, asyncio.Future[list[Decision]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending = False  # a script call is under way (or about to be)

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

    async def hit_all(self, key: str, limits: list[tuple[int, int]], cost: int = 1) -> list[Decision]:
        """``MemoryLimiter.hit_all``, atomic across replicas: one round trip."""
        return await self.hit_many([(key, lim, w) for lim, w in limits], cost)

    async def hit_many(self, windows: list[Window], cost: int = 1) -> list[Decision]:
        """``MemoryLimiter.hit_many``, atomic across replicas. One script call
        at a time: the calls made while it runs wait for it and go together in
        the next one (one round trip, one command to pack and parse: at a few
        thousand decisions a second that is most of their CPU time; gRPC
        handlers reach here in different loop turns, so batching by turn alone
        made batches of one)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[Decision]] = loop.create_future()
        self._pending.append((windows, cost, self.clock(), answer))
        if not self._sending:
            self._sending = True
            loop.call_soon(self._send)
        return await answer

    def _send(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._pending:  # the calls made meanwhile
            self._send()
        else:
            self._sending = False

    async def _run(self, batch: list[tuple[list[Window], int, float, asyncio.Future[list[Decision]]]]) -> None:
        try:
            await self._count(batch)
        except BaseException as exc:  # cancelled (shutdown) or a bug: no caller waits for ever
            for *_, answer in batch:
                if not answer.done():
                    answer.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            raise

    async def _count(self, batch: list[tuple[list[Window], int, float, asyncio.Future[list[Decision]]]]) -> None:
        keys: list[str] = []
        args: list[float | int] = []
        for windows, cost, now, _ in batch:
            args += [now, cost, len(windows)]
            for b, limit, w in windows:
                keys += self._keys(b, w, now)
                args += [limit, w]
        try:
            if self._batch_conn is not None:
                out = await self._batch_conn.call(keys, args)
            else:
                out = await self._script_batch(keys=keys, args=args)
        except Exception as exc:  # redis down: limit locally, say so once
            self._note_degraded(exc)
            for windows, cost, _, answer in batch:
                if not answer.done():  # a caller gone (cancelled) wants no answer
                    answer.set_result(await self.fallback.hit_many(windows, cost))
            return
        self._degraded = False
        i = 0
        for windows, cost, now, answer in batch:
            if not answer.done():
                answer.set_result([_decide(int(out[i + 1 + 2 * j]), int(out[i + 2 + 2 * j]) + cost, lim, w, now,
                                           counted=True) for j, (_, lim, w) in enumerate(windows)])
            i += 1 + 2 * len(windows)

    def close(self) -> None:
        """The batch script's connection (the client is closed by its owner)."""
        if self._batch_conn is not None:
            self._batch_conn.close()

    async def undo(self, windows: list[Window], cost: int = 1) -> None:
        """``MemoryLimiter.undo``, in Redis (best effort: Redis down, the call stays counted)."""
        now = self.clock()
        try:
            await self._script_undo(keys=[self._keys(b, w, now)[0] for b, _, w in windows], args=[cost])
        except Exception as exc:
            self._note_degraded(exc)
            await self.fallback.undo(windows, cost)

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
