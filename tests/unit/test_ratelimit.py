"""The sliding-window limiter, in process and on the real Redis."""

from __future__ import annotations

import uuid

import pytest

from authserver.ratelimit import MemoryLimiter, RedisLimiter


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def _limiters(kind: str, clock, redis_url: str | None):
    if kind == "memory":
        return MemoryLimiter(clock), None
    import redis.asyncio as aioredis

    r = aioredis.from_url(redis_url)
    return RedisLimiter(r, clock, f"test-{uuid.uuid4().hex[:8]}", MemoryLimiter(clock)), r


@pytest.fixture(params=["memory", "redis"])
async def limiter(request):
    clock = FakeClock(600_000.0)  # start of a 60 s window
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    lim, r = await _limiters(request.param, clock, url)
    yield lim, clock
    if r is not None:
        await r.aclose()


async def test_allows_up_to_the_limit_then_refuses(limiter):
    lim, clock = limiter
    results = [await lim.hit("k", 5, 60) for _ in range(7)]
    assert [d.allowed for d in results] == [True] * 5 + [False] * 2
    assert [d.remaining for d in results[:5]] == [4, 3, 2, 1, 0]
    refused = results[-1]
    assert 1 <= refused.retry_after <= 60
    h = refused.headers()
    assert h["RateLimit-Limit"] == "5" and h["RateLimit-Remaining"] == "0" and "Retry-After" in h


async def test_previous_window_weighs_in_and_fades(limiter):
    lim, clock = limiter
    for _ in range(5):
        assert (await lim.hit("k", 5, 60)).allowed
    clock.t += 60  # next window starts: the previous counts fully
    assert not (await lim.hit("k", 5, 60)).allowed
    clock.t += 30  # half-way: previous weighs 5 * 0.5 = 2.5, plus the refused hit
    assert (await lim.hit("k", 5, 60)).allowed
    clock.t += 30  # a full window later, the first window no longer counts
    for _ in range(3):
        assert (await lim.hit("k", 5, 60)).allowed


async def test_keys_are_independent_and_peek_does_not_count(limiter):
    lim, clock = limiter
    for _ in range(3):
        await lim.hit("a", 3, 60)
    assert not (await lim.peek("a", 3, 60)).allowed
    assert (await lim.peek("b", 3, 60)).allowed
    for _ in range(5):
        assert (await lim.peek("b", 3, 60)).allowed  # peeking never uses up the budget
    assert (await lim.hit("b", 3, 60)).allowed


async def test_redis_down_falls_back_to_local_limits():
    import redis.asyncio as aioredis
    from _proc import free_port

    clock = FakeClock(600_000.0)
    degraded = []
    r = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    lim = RedisLimiter(r, clock, "t", MemoryLimiter(clock), on_degraded=lambda: degraded.append(1))
    assert [(await lim.hit("k", 2, 60)).allowed for _ in range(3)] == [True, True, False]
    assert degraded
    import asyncio

    # calls sharing a script call all fall back, each counted once
    got = await asyncio.gather(*(lim.hit_many([("m", 3, 60)]) for _ in range(5)))
    assert [ds[0].allowed for ds in got] == [True] * 3 + [False] * 2
    await r.aclose()


async def test_hit_all_counts_in_every_window_only_when_all_have_room(limiter):
    lim, clock = limiter
    limits = [(2, 10), (3, 60)]
    got = [(await lim.hit_all("k", limits)) for _ in range(3)]
    assert [all(d.allowed for d in ds) for ds in got] == [True, True, False]
    assert [d.remaining for d in got[1]] == [0, 1]
    clock.t += 30  # two 10 s windows later: nothing left of them; the 60 s window holds 2
    ds = await lim.hit_all("k", limits)
    assert all(d.allowed for d in ds)  # the refused call above was not counted in the 60 s window
    ds = await lim.hit_all("k", limits)
    assert not ds[1].allowed and ds[0].allowed  # 3 per minute reached; the 10 s window had room
    assert ds[1].retry_after >= 1


async def test_hit_all_refusals_do_not_starve_the_next_window(limiter):
    lim, clock = limiter
    allowed = 0
    for _ in range(500):  # 10x the limit offered in one window
        allowed += all(d.allowed for d in await lim.hit_all("busy", [(50, 10)]))
    assert allowed == 50
    clock.t += 10 + 5  # half way through the next window: the previous one weighs half
    allowed = sum([all(d.allowed for d in await lim.hit_all("busy", [(50, 10)])) for _ in range(500)])
    assert allowed == 25  # had refusals been counted, the estimate would stay far above 50


async def test_hit_many_shares_a_subject_budget_and_counts_refusals_nowhere(limiter):
    lim, clock = limiter
    # two keys of one subject: each 3 per minute of its own, 4 per minute together
    a = [("key:a", 3, 60), ("sub:s", 4, 60)]
    b = [("key:b", 3, 60), ("sub:s", 4, 60)]
    got = [all(d.allowed for d in await lim.hit_many(a)) for _ in range(3)]
    assert got == [True, True, True]
    assert [all(d.allowed for d in await lim.hit_many(b)) for _ in range(2)] == [True, False]  # the 4th of 4
    refused = await lim.hit_many(b)
    assert [d.allowed for d in refused] == [True, False]  # b's own window has room, the shared one not
    # the refusals were counted nowhere: b's own window still holds exactly one call
    assert (await lim.peek("key:b", 3, 60)).remaining == 2
    # a call costing 2 counts 2 everywhere, or nowhere
    clock.t += 120
    assert all(d.allowed for d in await lim.hit_many(a, cost=2))
    assert not all(d.allowed for d in await lim.hit_many(b, cost=3))  # 2 + 3 > 4 together
    assert (await lim.peek("key:b", 3, 60)).remaining == 3 and (await lim.peek("sub:s", 4, 60)).remaining == 2


async def test_undo_takes_a_call_back_but_never_below_zero(limiter):
    lim, clock = limiter
    w = [("key:u", 3, 60)]
    for _ in range(3):
        await lim.hit_many(w, cost=1)
    assert not all(d.allowed for d in await lim.hit_many(w))
    await lim.undo(w, cost=1)
    assert all(d.allowed for d in await lim.hit_many(w))
    await lim.undo([("key:never-counted", 3, 60)], cost=5)  # nothing there: nothing made
    assert (await lim.peek("key:never-counted", 3, 60)).remaining == 3
    if isinstance(lim, RedisLimiter):
        assert await lim.redis.keys(f"{lim.ns}:*never-counted*") == []


async def test_concurrent_calls_share_script_calls_and_stay_exact(limiter):
    """Calls made together (as gRPC handlers are) go to Redis in shared script
    calls; each is still checked and counted in turn: exactly the limit passes,
    the subject's shared budget included, and a refused call counts nowhere."""
    import asyncio

    lim, clock = limiter
    script_calls = []
    if isinstance(lim, RedisLimiter):
        assert lim._batch_conn is not None  # plain TCP: the script's own connection
        inner = lim._batch_conn.call

        async def counting(keys, args):
            script_calls.append(keys)
            return await inner(keys, args)

        lim._batch_conn.call = counting
    own = [[(f"key:c{i}", 30, 60), ("sub:c", 100, 60)] for i in range(5)]
    results = await asyncio.gather(*(lim.hit_many(own[i % 5], cost=1 + i % 2) for i in range(300)))
    passed = [i for i, ds in enumerate(results) if all(d.allowed for d in ds)]
    assert sum(1 + i % 2 for i in passed) <= 100
    assert 100 - sum(1 + i % 2 for i in passed) <= 1  # only a cost of 2 may not fit the last unit
    for k in range(5):  # no key's own window over its limit
        assert sum(1 + i % 2 for i in passed if i % 5 == k) <= 30
    left = (await lim.peek("sub:c", 100, 60)).remaining
    assert left == 100 - sum(1 + i % 2 for i in passed)  # what passed is what was counted, nothing more
    if isinstance(lim, RedisLimiter):
        assert 1 <= len(script_calls) < 300  # shared round trips
