"""Usage per key, from what gateways report (``gateways.accesslog``).

Calls are counted in memory per (key, hour, status class) and written in
batches every ``flush_interval`` seconds, never one write per request: one
transaction upserts ``key_usage`` rows by increment (so replicas add up, in
any order) and moves ``api_keys.last_used_at`` forward. If the database is
down the counts stay in memory and go with the next batch (bounded: past
``max_pending`` keys-hours new calls are dropped and counted as such).
Only key ids are kept, never a key string.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models import ApiKey, KeyUsage
from ..errors import InvalidInput

__all__ = ["UsageRecorder", "UsageQueries", "STATUS_CLASSES"]

log = logging.getLogger("authserver.usage")

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
_COLUMN = {2: "s2xx", 3: "s3xx", 4: "s4xx", 5: "s5xx"}
GRANULARITY = {"hour": 3600, "day": 86400}
MAX_POINTS = 24 * 400


@dataclass
class _Pending:
    counts: dict[tuple[str, str, int], list[int]]  # (tenant, kid, hour) -> [2xx, 3xx, 4xx, 5xx]
    last_used: dict[str, tuple[str, int]]  # kid -> (tenant, time)


class UsageRecorder:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, flush_interval: float = 2.0,
                 max_pending: int = 1_000_000, clock: Callable[[], float] = time.time,
                 on_dropped: Callable[[int], None] = lambda n: None) -> None:
        self.sessions = sessions
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.clock = clock
        self.on_dropped = on_dropped
        self._pending = _Pending({}, {})
        self._lock = asyncio.Lock()
        self.written = 0  # calls written so far (tests, metrics)

    def record(self, tenant_id: str, kid: str, status: int, at: float) -> None:
        """One call a gateway answered with ``status`` at ``at``."""
        klass = status // 100
        if klass not in _COLUMN:
            return
        counts = self._pending.counts
        slot = (tenant_id, kid, int(at) // 3600 * 3600)
        row = counts.get(slot)
        if row is None:
            if len(counts) >= self.max_pending:
                self.on_dropped(1)
                return
            row = counts[slot] = [0, 0, 0, 0]
        row[klass - 2] += 1
        seen = self._pending.last_used.get(kid)
        if seen is None or seen[1] < at:
            self._pending.last_used[kid] = (tenant_id, int(at))

    async def flush(self) -> int:
        """Write what was counted since the last flush; returns the calls written."""
        async with self._lock:
            batch, self._pending = self._pending, _Pending({}, {})
            if not batch.counts and not batch.last_used:
                return 0
            try:
                await self._write(batch)
            except Exception:
                self._merge_back(batch)
                raise
            n = sum(sum(c) for c in batch.counts.values())
            self.written += n
            return n

    def _merge_back(self, batch: _Pending) -> None:
        for slot, row in batch.counts.items():
            mine = self._pending.counts.setdefault(slot, [0, 0, 0, 0])
            for i, v in enumerate(row):
                mine[i] += v
        for kid, (tenant, at) in batch.last_used.items():
            seen = self._pending.last_used.get(kid)
            if seen is None or seen[1] < at:
                self._pending.last_used[kid] = (tenant, at)

    async def _write(self, batch: _Pending) -> None:
        async with self.sessions() as s, s.begin():
            if batch.counts:
                insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
                values = [{"tenant_id": t, "key_id": k, "hour": h, **dict(zip(_COLUMN.values(), row, strict=True))}
                          for (t, k, h), row in batch.counts.items()]
                stmt = insert(KeyUsage)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[KeyUsage.key_id, KeyUsage.hour],
                    set_={c: getattr(KeyUsage, c) + getattr(stmt.excluded, c) for c in _COLUMN.values()},
                )
                await s.execute(stmt, values)
            for kid, (tenant, at) in batch.last_used.items():
                await s.execute(
                    update(ApiKey).where(ApiKey.id == kid, ApiKey.tenant_id == tenant)
                    .where((ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < at))
                    .values(last_used_at=at)
                )

    async def run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
                if failing:
                    log.info("usage: writing again")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down: counts stay in memory for the next batch
                if not failing:
                    log.warning("usage: could not write a batch (%s); keeping the counts for the next one",
                                type(exc).__name__)
                failing = True


class UsageQueries:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def totals(self, tenant_id: str, kid: str) -> dict[str, int]:
        cols = [func.coalesce(func.sum(getattr(KeyUsage, c)), 0) for c in _COLUMN.values()]
        async with self.sessions() as s:
            row = (await s.execute(select(*cols).where(KeyUsage.key_id == kid, KeyUsage.tenant_id == tenant_id))).one()
        return dict(zip(STATUS_CLASSES, (int(v) for v in row), strict=True))

    async def series(self, tenant_id: str, kid: str, start: int, end: int, granularity: str) -> list[dict[str, Any]]:
        """Calls per hour or day in [start, end), oldest first, empty periods left out."""
        step = GRANULARITY.get(granularity)
        if step is None:
            raise InvalidInput("granularity is hour or day")
        if end <= start:
            raise InvalidInput("from must be before to")
        if (end - start) // step > MAX_POINTS:
            raise InvalidInput(f"at most {MAX_POINTS} points: narrow the range or use a coarser granularity")
        async with self.sessions() as s:
            rows = (await s.execute(
                select(KeyUsage).where(KeyUsage.tenant_id == tenant_id, KeyUsage.key_id == kid,
                                       KeyUsage.hour >= start // 3600 * 3600, KeyUsage.hour < end)
                .order_by(KeyUsage.hour)
            )).scalars().all()
        points: dict[int, list[int]] = {}
        for r in rows:
            p = points.setdefault(r.hour // step * step, [0, 0, 0, 0])
            for i, c in enumerate(_COLUMN.values()):
                p[i] += getattr(r, c)
        return [{"start": t, **dict(zip(STATUS_CLASSES, p, strict=True))} for t, p in sorted(points.items())]
