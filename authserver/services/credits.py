"""Spending a key's credits, exactly, whatever the number of replicas.

One conditional UPDATE per call, in the database that holds the credits: the
period's refill (if a new UTC day or month began) and the spending happen in
the same statement, under the row's lock, and only if enough is left. So two
replicas can never both spend the last credit, a refill happens once per
period, and nothing is lost if Redis or a replica goes away. Only keys that
have credits pay this round trip.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, case, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..credits import period_start
from ..db.models import ApiKey

__all__ = ["CreditState", "Credits"]


@dataclass(frozen=True, slots=True)
class CreditState:
    allowed: bool
    remaining: int | None  # after this call; None when the key has no credits (or is unknown)


class Credits:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], float] = time.time) -> None:
        self.sessions = sessions
        self.clock = clock

    async def spend(self, tenant_id: str, kid: str, cost: int = 1) -> CreditState:
        now = self.clock()
        k = ApiKey
        period = case((k.credits_refill_interval == "day", period_start("day", now)),
                      else_=period_start("month", now))
        refill_due = and_(k.credits_refill_amount.is_not(None), k.credits_refilled_at < period)
        available = case((refill_due, k.credits_refill_amount), else_=k.credits_remaining)
        stmt = (
            update(k)
            .where(k.id == kid, k.tenant_id == tenant_id, k.credits_remaining.is_not(None), available >= cost)
            .values(credits_remaining=available - cost,
                    credits_refilled_at=case((refill_due, period), else_=k.credits_refilled_at))
            .returning(k.credits_remaining)
            .execution_options(synchronize_session=False)
        )
        async with self.sessions() as s, s.begin():
            left = (await s.execute(stmt)).scalar_one_or_none()
        if left is not None:
            return CreditState(True, int(left))
        return CreditState(False, 0)

    @staticmethod
    def view(row: ApiKey, now: float) -> dict[str, object] | None:
        """A key's credits as the API shows them (a due refill already applied)."""
        if row.credits_remaining is None:
            return None
        remaining = row.credits_remaining
        refill = None
        if row.credits_refill_amount is not None and row.credits_refill_interval is not None:
            refill = {"amount": row.credits_refill_amount, "interval": row.credits_refill_interval}
            if (row.credits_refilled_at or 0) < period_start(row.credits_refill_interval, now):
                remaining = row.credits_refill_amount
        return {"remaining": remaining, "refill": refill}
