"""Answers without waiting on Redis (RedisLimiter's grants), on the real Redis,
with an injected clock: the limit holds across replicas whatever the order of
their calls, and Redis ends up with exactly the calls let through."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from authserver.ratelimit import MemoryLimiter, RedisLimiter


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def replicas(redis_url):
    """Two replicas' limiters sharing one namespace (each a client of its own), share 4."""
    import redis.asyncio as aioredis

    clock = FakeClock(600_000.0)  # the start of a 60 s window
    ns = f"test-{uuid.uuid4().hex[:8]}"
    clients = [aioredis.from_url(redis_url) for _ in range(2)]
    lims = [RedisLimiter(c, clock, ns, MemoryLimiter(clock), replica=name, share=4, flush_delay=0.001)
            for c, name in zip(clients, "ab", strict=True)]
    yield lims, clock, clients[0]
    for lim, c in zip(lims, clients, strict=True):
        lim.close()
        await c.aclose()


async def settle(*lims: RedisLimiter) -> None:
    """Until every count let through has reached Redis."""
    for _ in range(400):
        if not any(lim._sending or lim._unsent for lim in lims):
            return
        await asyncio.sleep(0.005)
    raise AssertionError("counts never sent")


async def counted(r, lim: RedisLimiter, bucket: str, window: int, t: float) -> int:
    return int(await r.get(lim._keys(bucket, window, t)[0]) or 0)


async def test_far_from_the_limit_answers_without_waiting_and_counts_exactly(replicas):
    (a, _), clock, r = replicas
    trips: list[float] = []
    a.on_round_trip = trips.append
    w = [("key:far", 1000, 60)]
    assert a.decide_now(w) is None  # nothing known yet: ask Redis
    assert (await a.hit_many(w))[0].allowed
    got = [a.decide_now(w) for _ in range(100)]
    assert all(d is not None and d[0].allowed for d in got)
    assert [d[0].remaining for d in got if d is not None][-1] == 1000 - 101  # the headers count them
    await settle(a)
    assert await counted(r, a, "key:far", 60, clock.t) == 101
    assert len(trips) < 10  # sent together, not one round trip each


async def test_credits_always_wait_on_redis(replicas):
    (a, _), clock, r = replicas
    trips: list[float] = []
    a.on_round_trip = trips.append
    w = [("key:credits", 1000, 60)]
    await a.hit_many(w)
    assert a.decide_now(w) is not None  # a grant is held
    n = len(trips)
    assert (await a.hit_many(w, local=False))[0].allowed
    assert len(trips) == n + 1
    exact = [("key:only-credits", 1000, 60)]
    for _ in range(3):  # a key whose calls all wait takes no grant: nothing counted early
        assert (await a.hit_many(exact, local=False))[0].remaining == 1000 - _ - 1
    assert a.decide_now(exact) is None and await r.keys(f"{a.ns}:*only-credits*:g") == []


@pytest.mark.parametrize("seed", range(6))
async def test_replicas_never_let_more_than_the_limit_through(replicas, seed):
    """Any interleaving of two replicas' calls (some waiting on Redis, some
    answered at once, counts sent at random moments): never over the limit,
    nearly all of it used, and Redis has counted exactly what passed."""
    lims, clock, r = replicas
    rng = random.Random(seed)
    limit, passed = 60, 0
    w = [("key:shared", limit, 60), ("sub:shared", 10 * limit, 60)]
    for _ in range(60):
        burst = [rng.choice(lims) for _ in range(rng.randint(1, 8))]
        results = await asyncio.gather(*(lim.hit_many(w) for lim in burst))
        passed += sum(all(d.allowed for d in ds) for ds in results)
        if rng.random() < 0.3:
            await settle(*lims)
        else:
            await asyncio.sleep(0)
    assert passed <= limit
    await settle(*lims)
    assert await counted(r, lims[0], "key:shared", 60, clock.t) == passed
    assert await counted(r, lims[0], "sub:shared", 60, clock.t) == passed
    assert passed >= limit - 4  # grants still held refuse a little early, no more


async def test_a_stale_view_cannot_spend_what_another_replica_used(replicas):
    """Replica a learns the count early (a large grant), b then uses the rest
    of the limit: a's grant was counted as spent in every check of b's, so a
    letting its whole grant through stays within the limit."""
    (a, b), clock, r = replicas
    limit = 100
    w = [("key:stale", limit, 60)]
    assert (await a.hit_many(w))[0].allowed
    held = a._held["key:stale", 60]
    assert held.grant - held.allowed > 10  # a may let many through without asking
    passed_b = 0
    for _ in range(3 * limit):
        passed_b += (await b.hit_many(w))[0].allowed
        await settle(b)
    passed_a = 1
    while (ds := a.decide_now(w)) is not None:
        passed_a += ds[0].allowed
    for _ in range(20):
        passed_a += (await a.hit_many(w))[0].allowed
    assert passed_a + passed_b <= limit
    await settle(a, b)
    assert await counted(r, a, "key:stale", 60, clock.t) == passed_a + passed_b
    assert passed_a + passed_b >= limit - 4


async def test_a_window_over_counts_in_it_and_gives_its_grant_back(replicas):
    (a, _), clock, r = replicas
    w = [("key:roll", 1000, 60)]
    t0 = clock.t
    await a.hit_many(w)
    for _ in range(30):
        assert a.decide_now(w) is not None
    clock.t += 60  # the next window: what was let through belongs to the one before
    assert a.decide_now(w) is None
    assert (await a.hit_many(w))[0].allowed
    await settle(a)
    assert await counted(r, a, "key:roll", 60, t0) == 31
    assert await counted(r, a, "key:roll", 60, clock.t) == 1
    old = await r.hgetall(a._window_keys("key:roll", 60, int(t0 // 60))[2])
    assert old[b"a|l"] == old[b"a|f"] == b"30"  # let through here: all sent, nothing held any more


async def test_share_zero_always_waits(redis_url):
    import redis.asyncio as aioredis

    clock = FakeClock(600_000.0)
    c = aioredis.from_url(redis_url)
    lim = RedisLimiter(c, clock, f"test-{uuid.uuid4().hex[:8]}", MemoryLimiter(clock), replica="a", share=0)
    w = [("key:z", 1000, 60)]
    for _ in range(3):
        assert (await lim.hit_many(w))[0].allowed
        assert lim.decide_now(w) is None
    assert await c.keys(f"{lim.ns}:*:g") == []  # no grants written
    lim.close()
    await c.aclose()


async def test_a_grant_lapses_so_a_silent_replica_holds_nothing_for_long(replicas):
    """a takes a large grant and goes silent (gone, or its traffic moved): a
    stops using it after half its life, and after its life b may use all of it."""
    (a, b), clock, r = replicas
    limit = 40
    w = [("key:lapse", limit, 60)]
    assert (await a.hit_many(w))[0].allowed
    assert a.decide_now(w) is not None  # a holds a grant
    passed_b = 0
    for _ in range(limit):
        passed_b += (await b.hit_many(w))[0].allowed
        await settle(a, b)
    assert passed_b < limit - 2  # a's grant counts as spent meanwhile
    clock.t += a.grant_seconds / 2
    assert a.decide_now(w) is None  # a no longer uses it
    clock.t += a.grant_seconds / 2 + 0.01
    for _ in range(limit):
        passed_b += (await b.hit_many(w))[0].allowed
        await settle(b)
    assert limit - 4 <= 2 + passed_b <= limit
    await settle(a, b)
    assert await counted(r, a, "key:lapse", 60, clock.t) == 2 + passed_b
