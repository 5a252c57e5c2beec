"""The portal's session store: a Litestar ``Store`` on the database.

Every replica and every ``serve --workers`` process shares the database, so a
session opened on one is known to all, with no sticky routing and no extra
service. Portal traffic is people clicking: one indexed row read per request
costs nothing next to the page. Rows are keyed by the SHA-256 of the cookie's
session id (portal/session.py), so the table opens no session; expired rows
are deleted when sessions are created.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from litestar.stores.base import Store
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models import PortalSessionRow

__all__ = ["DatabaseStore"]

_RENEW_STEP_MS = 60_000


def _seconds(value: int | timedelta | None) -> int | None:
    return int(value.total_seconds()) if isinstance(value, timedelta) else value


class DatabaseStore(Store):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], float] = time.time) -> None:
        self.sessions = sessions
        self.clock = clock

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _until(self, seconds: int | timedelta | None) -> int | None:
        s = _seconds(seconds)
        return None if s is None else self._now_ms() + s * 1000

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        data = value.encode() if isinstance(value, str) else value
        row = PortalSessionRow(key=key, value=data, expires_at=self._until(expires_in))
        async with self.sessions() as s, s.begin():
            await s.merge(row)  # insert or replace: the same session is saved again on change

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        now = self._now_ms()
        async with self.sessions() as s, s.begin():
            row = (await s.execute(select(PortalSessionRow.value, PortalSessionRow.expires_at)
                                   .where(PortalSessionRow.key == key))).first()
            if row is None or (row.expires_at is not None and row.expires_at <= now):
                return None
            until = self._until(renew_for)
            # a page view renews the idle deadline, but writes at most once a minute
            if until is not None and row.expires_at is not None and until - row.expires_at >= _RENEW_STEP_MS:
                await s.execute(update(PortalSessionRow).where(PortalSessionRow.key == key)
                                .values(expires_at=until))
            return bytes(row.value)

    async def delete(self, key: str) -> None:
        async with self.sessions() as s, s.begin():
            await s.execute(delete(PortalSessionRow).where(PortalSessionRow.key == key))

    async def delete_all(self) -> None:
        async with self.sessions() as s, s.begin():
            await s.execute(delete(PortalSessionRow))

    async def delete_expired(self) -> None:
        async with self.sessions() as s, s.begin():
            await s.execute(delete(PortalSessionRow).where(PortalSessionRow.expires_at <= self._now_ms()))

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        async with self.sessions() as s:
            expires_at = await s.scalar(select(PortalSessionRow.expires_at).where(PortalSessionRow.key == key))
        if expires_at is None:
            return None
        return max(0, (expires_at - self._now_ms()) // 1000)
