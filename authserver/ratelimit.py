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
import time
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

    async def hit_many(self, windows: list[Window], cost: int = 1, local: bool = True) -> list[Decision]:
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

    def decide_now(self, windows: list[Window], cost: int = 1) -> list[Decision] | None:
        """``RedisLimiter.decide_now``: None, ``hit_many`` decides (it never waits here)."""
        return None

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
#
# Grants (see RedisLimiter): a window's hash G holds per replica R "R|l" (R may
# allow calls up to this total without asking), "R|f" (of them, the total R
# has sent here) and "R|t" (the grant lapses then: R stops using it well
# before, so a replica gone or idle holds nothing for long). Its outstanding
# l - f is what R may have let through and not yet counted: every check counts
# all replicas' live outstanding as spent (the previous window's at full
# weight), and a grant only ever takes part of what is left, so the calls let
# through never pass the limit.
# ARGV[1..3]: this replica, the share (0: no grants, checks as before), a grant's life (s).
# Then entries, 4 KEYS per window (cur, prev, G of cur, G of prev):
#   'c', now, cost, n, limit_1, window_1, ... (a call's check; n windows; 'x'
#     instead of 'c': no grant wanted, the key's calls all wait on Redis)
#     -> ok, then per window: prev, cur (as found: before counting), held
#        (all live grants' outstanding: counted as spent), l, f, t
#   'f', now, limit, window, allowed, final (one window's calls let through
#     without asking, as a running total: sending it twice counts it once;
#     final: the window is over for this replica, its grant is released)
#     -> prev, cur, l, f, t
_HIT_BATCH = """
local me, share, life = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out, a, k = {}, 4, 0
-- the live grants' outstanding in G, but for replica skip's
local function held(g, now, skip)
  local t, by, s = redis.call('HGETALL', g), {}, 0
  for i = 1, #t, 2 do
    local name, part = string.match(t[i], '^(.*)|(%a)$')
    local r = by[name]
    if r == nil then r = {l = 0, f = 0, t = 0}; by[name] = r end
    r[part] = tonumber(t[i+1])
  end
  for name, r in pairs(by) do
    if name ~= skip and r.t >= now then s = s + r.l - r.f end
  end
  return s
end
local function mine(g)
  local v = redis.call('HMGET', g, me .. '|l', me .. '|f', me .. '|t')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0')
end
-- my grant: raised to a share of what nobody holds, never lowered while live (it may be in use)
local function grant(g, gp, est, limit, window, now)
  local l, f, t = mine(g)
  if t < now then l = f end
  local s = math.floor((limit - est - held(g, now, me) - held(gp, now, nil)) / share)
  if f + s > l then l = f + s end
  if l > f then
    t = now + life
    redis.call('HSET', g, me .. '|l', l, me .. '|f', f, me .. '|t', t)
    redis.call('EXPIRE', g, 2 * window + 1)
  end
  return l, f, t
end
while a <= #ARGV do
  if ARGV[a] == 'f' then
    local now, limit, window, allowed, final = tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]),
      tonumber(ARGV[a+4]), ARGV[a+5] == '1'
    local g = KEYS[k+3]
    local l, f, t = mine(g)
    local cur = tonumber(redis.call('GET', KEYS[k+1]) or '0')
    if allowed > f then
      cur = redis.call('INCRBY', KEYS[k+1], allowed - f)
      if cur == allowed - f then redis.call('EXPIRE', KEYS[k+1], 2 * window + 1) end
      f = allowed
    end
    if final or f > l then l = f end
    redis.call('HSET', g, me .. '|l', l, me .. '|f', f, me .. '|t', t)
    redis.call('EXPIRE', g, 2 * window + 1)
    local prev = tonumber(redis.call('GET', KEYS[k+2]) or '0')
    if not final then
      l, f, t = grant(g, KEYS[k+4], prev * (window - now % window) / window + cur, limit, window, now)
    end
    out[#out+1], out[#out+2], out[#out+3], out[#out+4], out[#out+5] = prev, cur, l, f, tostring(t)
    k, a = k + 4, a + 6
  else
    local now, cost, n = tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3])
    local base, ok = #out + 1, 1
    local est = {}
    for i = 1, n do
      local c = k + 4 * i
      local cur = tonumber(redis.call('GET', KEYS[c-3]) or '0')
      local prev = tonumber(redis.call('GET', KEYS[c-2]) or '0')
      local limit, window = tonumber(ARGV[a+2+2*i]), tonumber(ARGV[a+3+2*i])
      est[i] = prev * (window - now % window) / window + cur
      local spent = 0
      if share > 0 then spent = held(KEYS[c-1], now, nil) + held(KEYS[c], now, nil) end
      if est[i] + cost + spent > limit then ok = 0 end
      out[base+6*i-5], out[base+6*i-4], out[base+6*i-3] = prev, cur, spent
    end
    if ok == 1 then
      for i = 1, n do
        local c = redis.call('INCRBY', KEYS[k+4*i-3], cost)
        if c == cost then redis.call('EXPIRE', KEYS[k+4*i-3], 2 * tonumber(ARGV[a+3+2*i]) + 1) end
        out[base+6*i-4] = c - cost
      end
    end
    for i = 1, n do
      local g, l, f, t = KEYS[k+4*i-1], 0, 0, 0
      if share > 0 and ok == 1 and ARGV[a] == 'c' then
        l, f, t = grant(g, KEYS[k+4*i], est[i] + cost, tonumber(ARGV[a+2+2*i]), tonumber(ARGV[a+3+2*i]), now)
      elseif share > 0 then
        l, f, t = mine(g)
      end
      out[base+6*i-2], out[base+6*i-1], out[base+6*i] = l, f, tostring(t)
    end
    out[base] = ok
    k, a = k + 4 * n, a + 4 + 2 * n
  end
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


class _Held:
    """One window of one bucket that this replica may count in without asking
    Redis (``RedisLimiter``): what Redis said last, and the calls let through
    here since (a running total for the window, as the script takes it)."""

    __slots__ = ("bucket", "window", "idx", "limit", "prev", "cur", "grant", "acked", "allowed", "until")

    def __init__(self, bucket: str, window: int, idx: int, limit: int) -> None:
        self.bucket, self.window, self.idx, self.limit = bucket, window, idx, limit
        self.prev = self.cur = 0  # Redis's counts at the last answer (cur holds what was acked)
        self.grant = self.acked = self.allowed = 0  # may let through up to; counted in Redis; let through
        self.until = 0.0  # the grant is used until then (half its life: its calls reach Redis well before it lapses)


# a call waiting on Redis: its windows, cost, time, answer, and whether it may take a grant
_Call = tuple[list[Window], int, float, "asyncio.Future[list[Decision]]", bool]


class RedisLimiter:
    """Shared limits; falls back to ``fallback`` when Redis errors.

    Without waiting (``share`` > 0): most calls of a key far from its limit
    are answered from what this replica already knows, and counted in Redis
    soon after (in the next script call, ``flush_delay`` later at most: one
    wake-up and round trip for the calls of several milliseconds). Each
    replica holds a grant per window, given by the script: how many calls it
    may let through before Redis has counted them, a ``1/share`` part of what
    no replica has counted or holds. Every check in Redis counts all grants
    still held as spent, so the calls let through never pass the limit, and
    the counts in Redis stay exact (a grant's unused part only refuses early
    until its holder's next call, or the window's end). Near the limit, grants
    run out and calls wait on Redis as before; ``local=False`` (credits, which
    must be exact) always waits."""

    def __init__(self, redis: Redis, clock: Callable[[], float], namespace: str, fallback: MemoryLimiter,
                 on_degraded: Callable[[], None] | None = None, replica: str = "", share: int = 0,
                 flush_delay: float = 0.01, grant_seconds: float = 1.0) -> None:
        self.redis = redis
        self.clock = clock
        self.ns = namespace
        self.fallback = fallback
        self.on_degraded = on_degraded
        self.replica = replica or "r"
        self.share = share
        self.flush_delay = flush_delay
        self.grant_seconds = grant_seconds
        self._script = redis.register_script(_HIT)
        self._script_batch = redis.register_script(_HIT_BATCH)
        self._script_undo = redis.register_script(_UNDO)
        # the batch script's own connection (plain TCP), else redis-py's: see redisscript
        self._batch_conn = for_client(redis, _HIT_BATCH)
        self._degraded = False
        # calls waiting for the next batch: (windows, cost, now, their answer)
        self._pending: list[_Call] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending = False  # a script call is under way (or about to be)
        self._timer: asyncio.TimerHandle | None = None  # a script call only to send counts, not yet made
        self._held: dict[tuple[str, int], _Held] = {}
        self._unsent: set[_Held] = set()  # let through and not yet sent, or grants to give back
        # told each batch script call's round trip (seconds): set by the rate-limit service's metrics
        self.on_round_trip: Callable[[float], None] | None = None

    def _keys(self, key: str, window: int, now: float) -> tuple[str, str]:
        idx = int(now // window)
        return f"{self.ns}:rl:{window}:{key}:{idx}", f"{self.ns}:rl:{window}:{key}:{idx - 1}"

    def _window_keys(self, key: str, window: int, idx: int) -> list[str]:
        """The script's four keys of a window: counts, the previous window's, and their grants."""
        cur, prev = f"{self.ns}:rl:{window}:{key}:{idx}", f"{self.ns}:rl:{window}:{key}:{idx - 1}"
        return [cur, prev, cur + ":g", prev + ":g"]

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

    def decide_now(self, windows: list[Window], cost: int = 1) -> list[Decision] | None:
        """The call's decisions without waiting, counted here (and sent to Redis
        soon) when this replica's grants cover it in every window; else None:
        ``hit_many`` then asks Redis."""
        if not self.share or self._degraded:
            return None
        now = self.clock()
        held: list[_Held] = []
        for b, lim, w in windows:
            h = self._held.get((b, w))
            if h is None:
                return None
            if h.idx != int(now // w):  # a window over: give its grant back, ask Redis
                self._unsent.add(h)
                self._wake(later=True)
                return None
            if h.limit != lim or h.allowed + cost > h.grant or now >= h.until:
                return None
            if _estimate(h.prev, h.cur + h.allowed - h.acked, w, now) + cost > lim:
                return None
            if h in held:  # a bucket listed twice counts twice: let Redis check it
                return None
            held.append(h)
        for h in held:
            h.allowed += cost
            self._unsent.add(h)
        self._wake(later=True)
        return [_decide(h.prev, h.cur + h.allowed - h.acked, lim, w, now, counted=True)
                for h, (_, lim, w) in zip(held, windows, strict=True)]

    async def hit_many(self, windows: list[Window], cost: int = 1, local: bool = True) -> list[Decision]:
        """``MemoryLimiter.hit_many``, atomic across replicas (``decide_now``
        first unless ``local`` is False). One script call at a time: the calls
        made while it runs wait for it and go together in the next one (one
        round trip, one command to pack and parse: at a few thousand decisions
        a second that is most of their CPU time; gRPC handlers reach here in
        different loop turns, so batching by turn alone made batches of one)."""
        if local and (now := self.decide_now(windows, cost)) is not None:
            return now
        answer: asyncio.Future[list[Decision]] = asyncio.get_running_loop().create_future()
        self._pending.append((windows, cost, self.clock(), answer, local))
        self._wake(later=False)
        return await answer

    def _wake(self, later: bool) -> None:
        """A script call soon: now for a waiting caller, ``flush_delay`` later
        when it only sends counts (so that several go in one)."""
        loop = asyncio.get_running_loop()
        if not self._sending:
            self._sending = True
            if later:
                self._timer = loop.call_later(self.flush_delay, self._send)
            else:
                loop.call_soon(self._send)
        elif not later and self._timer is not None:
            self._timer.cancel()
            self._timer = None
            loop.call_soon(self._send)

    def _send(self) -> None:
        self._timer = None
        batch, self._pending = self._pending, []
        unsent, self._unsent = self._unsent, set()
        if not batch and not unsent:  # nothing left to send (Redis failed meanwhile)
            self._sending = False
            return
        task = asyncio.get_running_loop().create_task(self._run(batch, unsent))
        self._tasks.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._sending = False
        if self._pending:  # the calls made meanwhile
            self._wake(later=False)
        elif self._unsent:
            self._wake(later=True)

    async def _run(self, batch: list[_Call], unsent: set[_Held]) -> None:
        try:
            await self._count(batch, unsent)
        except BaseException as exc:  # cancelled (shutdown) or a bug: no caller waits for ever
            for _, _, _, answer, _ in batch:
                if not answer.done():
                    answer.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            raise

    async def _count(self, batch: list[_Call], unsent: set[_Held]) -> None:
        keys: list[str] = []
        args: list[float | int | str] = [self.replica, self.share, self.grant_seconds]
        now = self.clock()
        flushed = list(unsent)
        for h in flushed:  # first: the checks after them see these counts
            keys += self._window_keys(h.bucket, h.window, h.idx)
            args += ["f", now, h.limit, h.window, h.allowed, int(h.idx < int(now // h.window))]
        for windows, cost, t, _, local in batch:
            args += ["c" if local else "x", t, cost, len(windows)]
            for b, limit, w in windows:
                keys += self._window_keys(b, w, int(t // w))
                args += [limit, w]
        t0 = time.perf_counter()
        try:
            if self._batch_conn is not None:
                out = await self._batch_conn.call(keys, args)
            else:
                out = await self._script_batch(keys=keys, args=args)
        except Exception as exc:  # redis down: limit locally, say so once
            self._note_degraded(exc)
            self._held.clear()  # grants are void; what was let through here is lost to Redis
            self._unsent.clear()
            for windows, cost, _, answer, _ in batch:
                if not answer.done():  # a caller gone (cancelled) wants no answer
                    answer.set_result(await self.fallback.hit_many(windows, cost))
            return
        if self.on_round_trip is not None:
            self.on_round_trip(time.perf_counter() - t0)
        self._degraded = False
        i = 0
        for h in flushed:
            prev, cur, grant, acked = (int(v) for v in out[i:i + 4])
            until = float(out[i + 4]) - self.grant_seconds / 2
            i += 5
            if h.idx < int(now // h.window):  # final: counted, grant given back
                if self._held.get((h.bucket, h.window)) is h:
                    del self._held[h.bucket, h.window]
                continue
            h.prev, h.cur, h.grant, h.acked, h.until = prev, cur, grant, acked, until
        for windows, cost, t, answer, local in batch:
            ok = int(out[i]) == 1
            decisions = []
            for j, (b, lim, w) in enumerate(windows):
                at = i + 1 + 6 * j
                prev, cur, held, grant, acked = (int(v) for v in out[at:at + 5])
                decisions.append(_decide(prev, cur + held + cost, lim, w, t, counted=True))
                if self.share and local:
                    self._learn(b, lim, w, int(t // w), prev, cur + (cost if ok else 0), grant, acked,
                                float(out[at + 5]) - self.grant_seconds / 2)
            if not answer.done():
                answer.set_result(decisions)
            i += 1 + 6 * len(windows)

    def _learn(self, bucket: str, limit: int, window: int, idx: int, prev: int, cur: int, grant: int,
               acked: int, until: float) -> None:
        """What a check's answer says of a window: its counts, this replica's grant."""
        h = self._held.get((bucket, window))
        if h is None or h.idx < idx:
            if h is not None:  # the window before: its grant goes back with the next script call
                self._unsent.add(h)
                self._wake(later=True)
            if grant <= acked:
                return
            h = self._held[bucket, window] = _Held(bucket, window, idx, limit)
            h.allowed = acked  # the running total goes on from what Redis has
        elif h.idx > idx:
            return  # an answer about a window already over here
        h.limit, h.prev, h.cur, h.grant, h.acked, h.until = limit, prev, cur, grant, acked, until

    def close(self) -> None:
        """The batch script's connection (the client is closed by its owner)."""
        if self._timer is not None:
            self._timer.cancel()
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
        h = self._held.get((key, window))
        mine = h.allowed - h.acked if h is not None and h.idx == int(now // window) else 0
        return _decide(int(prev or 0), int(cur or 0) + mine, limit, window, now, counted=False)

    def _note_degraded(self, exc: Exception) -> None:
        if not self._degraded:
            log.warning("redis unavailable for rate limits, limiting per replica: %s", type(exc).__name__)
            self._degraded = True
        if self.on_degraded:
            self.on_degraded()
