"""services.usage on SQLite and the real PostgreSQL: batches from several
recorders (replicas) add up, last_used_at only moves forward, a failed batch
is kept for the next one."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from authserver.offline import open_core
from authserver.services import Actor, KeySpec
from authserver.services.usage import UsageQueries, UsageRecorder

HOUR = 3600
T0 = 1_800_000_000 // HOUR * HOUR


async def test_batches_from_two_replicas_add_up(make_settings):
    async with open_core(make_settings()) as core:
        await core.tenants.create_tenant("acme", algorithm="EdDSA", actor=Actor("t"))
        row, _ = await core.lifecycle.mint("acme", KeySpec(name="k"), Actor("t"))
        a, b = UsageRecorder(core.sessions), UsageRecorder(core.sessions)
        for i in range(10):
            a.record("acme", row.id, 200, T0 + i)
            b.record("acme", row.id, 503 if i % 2 else 404, T0 + HOUR + i)
        b.record("acme", row.id, 204, T0 + 5)
        b.record("acme", row.id, 101, T0 + 5)  # not a class we count
        assert await a.flush() == 10 and await b.flush() == 11
        a.record("acme", row.id, 200, T0 + 20)
        assert await a.flush() == 1  # the same row, incremented
        q = UsageQueries(core.sessions)
        assert await q.totals("acme", row.id) == {"2xx": 12, "3xx": 0, "4xx": 5, "5xx": 5}
        hours = await q.series("acme", row.id, T0, T0 + 2 * HOUR, "hour")
        assert hours == [{"start": T0, "2xx": 12, "3xx": 0, "4xx": 0, "5xx": 0},
                         {"start": T0 + HOUR, "2xx": 0, "3xx": 0, "4xx": 5, "5xx": 5}]
        days = await q.series("acme", row.id, T0 - 86400, T0 + 86400, "day")
        assert sum(p["2xx"] for p in days) == 12
        assert await q.totals("other", row.id) == {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}  # tenant-scoped
        got = await core.queries.get("acme", row.id)
        assert got.last_used_at == T0 + HOUR + 9
        a.record("acme", row.id, 200, T0)  # an older report does not move it back
        await a.flush()
        assert (await core.queries.get("acme", row.id)).last_used_at == T0 + HOUR + 9


async def test_a_failed_batch_is_kept_for_the_next(make_settings):
    async with open_core(make_settings()) as core:
        await core.tenants.create_tenant("acme", algorithm="EdDSA", actor=Actor("t"))
        row, _ = await core.lifecycle.mint("acme", KeySpec(name="k"), Actor("t"))

        def broken():
            raise ConnectionError("database down")

        rec = UsageRecorder(async_sessionmaker())  # type: ignore[call-arg]
        rec.sessions = broken  # type: ignore[assignment]
        rec.record("acme", row.id, 200, T0)
        with pytest.raises(ConnectionError):
            await rec.flush()
        rec.record("acme", row.id, 200, T0 + 1)
        rec.sessions = core.sessions
        assert await rec.flush() == 2
        assert (await UsageQueries(core.sessions).totals("acme", row.id))["2xx"] == 2


def test_pending_counts_are_bounded():
    dropped: list[int] = []
    rec = UsageRecorder(None, max_pending=2, on_dropped=dropped.append)  # type: ignore[arg-type]
    for hour in range(4):
        rec.record("acme", "k", 200, T0 + hour * HOUR)
    assert len(dropped) == 2
