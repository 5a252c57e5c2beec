"""Credits on SQLite and the real PostgreSQL: spending is exact under
concurrency (two services, as two replicas), a refill happens once per period,
and PATCH sets, changes or removes them."""

from __future__ import annotations

import asyncio
import datetime
import time

import msgspec

from authserver.credits import period_start
from authserver.offline import open_core
from authserver.schemas import KeyPatch, key_spec
from authserver.services import Actor
from authserver.services.credits import Credits

DAY = 86400
T0 = int(time.time()) // DAY * DAY + 3600  # 01:00 UTC today: the day the keys below are minted


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def test_spending_is_exact_and_refills_once_per_period(make_settings):
    clock = Clock(T0)
    async with open_core(make_settings()) as core:
        await core.tenants.create_tenant("acme", algorithm="EdDSA", actor=Actor("t"))
        spec = key_spec({"name": "k", "credits": {"remaining": 20, "refill": {"amount": 5, "interval": "day"}}})
        row, _ = await core.lifecycle.mint("acme", spec, Actor("t"))
        a, b = Credits(core.sessions, clock), Credits(core.sessions, clock)  # two replicas
        results = await asyncio.gather(*(svc.spend("acme", row.id) for svc in (a, b) for _ in range(25)))
        assert sum(r.allowed for r in results) == 20  # never 21, whatever the interleaving
        assert sorted(r.remaining for r in results if r.allowed) == list(range(20))
        assert not (await a.spend("acme", row.id)).allowed
        clock.t = T0 + DAY  # a new UTC day: back to 5, once
        results = await asyncio.gather(*(svc.spend("acme", row.id) for svc in (a, b) for _ in range(6)))
        assert sum(r.allowed for r in results) == 5
        assert (await core.queries.get("acme", row.id)).credits_refilled_at == period_start("day", T0 + DAY)
        assert (await a.spend("acme", row.id, cost=1)).allowed is False
        clock.t = T0 + 2 * DAY
        assert (await a.spend("acme", row.id, cost=6)).allowed is False  # more than a refill holds
        assert (await a.spend("acme", row.id, cost=5)).remaining == 0


async def test_patch_sets_and_removes_credits_and_keys_without_them_are_not_counted(make_settings):
    async with open_core(make_settings()) as core:
        await core.tenants.create_tenant("acme", algorithm="EdDSA", actor=Actor("t"))
        row, _ = await core.lifecycle.mint("acme", key_spec({"name": "k"}), Actor("t"))
        svc = Credits(core.sessions)
        assert (await svc.spend("acme", row.id)).allowed is False  # no credits configured: never spent here
        assert not core.cache.get("acme").published[row.id].has_credits
        two = msgspec.convert({"credits": {"remaining": 2}}, KeyPatch)
        await core.lifecycle.update("acme", row.id, two, Actor("t"))
        assert core.cache.get("acme").published[row.id].has_credits
        assert [(await svc.spend("acme", row.id)).allowed for _ in range(3)] == [True, True, False]
        await core.lifecycle.update("acme", row.id, KeyPatch(credits=None), Actor("t"))
        got = await core.queries.get("acme", row.id)
        assert got.credits_remaining is None and not core.cache.get("acme").published[row.id].has_credits
        assert (await svc.spend("other", row.id)).allowed is False  # another tenant's id: nothing spent


def test_periods_are_utc_days_and_months():
    t = datetime.datetime(2026, 12, 31, 23, 59, 59, tzinfo=datetime.UTC).timestamp()
    assert period_start("day", t) == int(datetime.datetime(2026, 12, 31, tzinfo=datetime.UTC).timestamp())
    assert period_start("month", t) == int(datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC).timestamp())
    assert period_start("month", t + 1) == int(datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC).timestamp())
