"""Keys leave exactly when due, with their removal times kept as (time, slot)
pairs in arrays (authserver.duetimes) instead of (time, kid) tuples."""

from __future__ import annotations

import heapq
import random

from test_keycache_memory import synthetic_jwk

import keys
from authserver.duetimes import DueTimes
from authserver.keycache import PublishedKey, TenantInfo, TenantKeys


def test_the_heap_pops_in_time_order_like_heapq() -> None:
    rng = random.Random(7)
    due, ref = DueTimes(), []
    for step in range(5000):
        if rng.random() < 0.6 or not ref:
            at = rng.choice([rng.randrange(-5, 50), rng.randrange(2**40), 2**62])  # ties, negatives, far future
            due.push(at, step)
            heapq.heappush(ref, at)
        else:
            assert due.pop()[0] == heapq.heappop(ref)
        assert due.first() == (ref[0] if ref else None) and len(due) == len(ref)
    while ref:
        assert due.pop()[0] == heapq.heappop(ref)
    assert due.first() is None


def test_a_time_past_32_bits_widens_the_heap_in_place() -> None:
    due, ref = DueTimes(), []
    for i, at in enumerate([1_700_000_000, 5, 1_700_000_000, 2**32 - 1, 3_000_000_000]):
        due.push(at, i)
        heapq.heappush(ref, at)
    for at in (2**32, -1, 2**40, 7):  # past 2106, before 1970: 64 bits from here on
        due.push(at, 9)
        heapq.heappush(ref, at)
    while ref:
        assert due.pop()[0] == heapq.heappop(ref)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _key(kind: str = "api", removed_at: int | None = None, kid: str | None = None) -> PublishedKey:
    jwk = synthetic_jwk("EdDSA") if kid is None else {**synthetic_jwk("EdDSA"), "kid": kid}
    return PublishedKey.from_jwk(jwk, "t", kind, removed_at=removed_at)


def test_keys_leave_exactly_when_due_through_reschedules_and_reused_slots() -> None:
    rng = random.Random(3)
    clock = Clock()
    tk = TenantKeys(TenantInfo("t", "i", "a", "aa", "p", "EdDSA"), keys.sentinel_jwk("EdDSA"), clock)
    live: dict[str, int | None] = {}  # kid -> removal time
    for _ in range(3000):
        roll = rng.random()
        if roll < 0.4 or not live:  # a new key, maybe with a removal time (many share one)
            at = rng.choice([None, int(clock.now) + rng.randrange(0, 30)])
            key = _key(removed_at=at)
            (tk.load if rng.random() < 0.5 else tk.put)(key, keys.jwks.serialize_jwk(synthetic_jwk("EdDSA") | {
                "kid": key.kid}))
            live[key.kid] = at
        elif roll < 0.6:  # a new removal time (or none) for a live key: same JWK
            kid = rng.choice(sorted(live))
            at = rng.choice([None, int(clock.now) + rng.randrange(0, 30)])
            before = tk.published[kid]
            tk.put(PublishedKey(**{**{f: getattr(before, f) for f in before.__slots__}, "removed_at": at}))
            live[kid] = at
        elif roll < 0.7:  # revoked: its slot is free for the next key
            kid = rng.choice(sorted(live))
            assert tk.remove(kid)
            del live[kid]
        else:
            clock.now += rng.choice([0, 1, 3])
        now = clock.now
        gone = set(tk.prune(now))
        assert gone == {k for k, at in live.items() if at is not None and at <= now}
        live = {k: at for k, at in live.items() if k not in gone}
        assert set(tk.published) == set(live)
        pending = [at for at in live.values() if at is not None]
        nxt = tk.next_removal()
        assert nxt is None or nxt > now
        assert not pending or (nxt is not None and nxt <= min(pending))


def test_an_admin_key_leaves_when_due_too() -> None:
    clock = Clock()
    tk = TenantKeys(TenantInfo("t", "i", "a", "aa", "p", "EdDSA"), keys.sentinel_jwk("EdDSA"), clock)
    admin = _key("admin", removed_at=1_010)
    api = _key(removed_at=1_020)
    tk.put(admin)
    tk.put(api)
    assert tk.next_removal() == 1_010
    clock.now = 1_009.9
    assert tk.prune(clock.now) == [] and admin.kid in tk.published
    clock.now = 1_010
    assert tk.prune(clock.now) == [admin.kid] and admin.kid not in tk.published
    assert tk.next_removal() == 1_020
    clock.now = 1_020
    assert tk.prune(clock.now) == [api.kid] and len(tk.published) == 0 and api.kid.encode() not in tk.jwks().body
