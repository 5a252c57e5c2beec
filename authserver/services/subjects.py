"""Rate limits shared by every API key of one subject (its owner, the keys'
``sub``): set, read, clear.

Like a key PATCH: one transaction (the row and its audit event), then the
local cache, then a change notice, so every replica's rate-limit service
counts the new limits at the next request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models import SubjectLimits
from ..errors import NotFound
from ..keycache import KeyCache
from ..schemas import RateLimit
from .common import Actor, audit_event, tenant_of

__all__ = ["SubjectLimitsService", "SubjectLimitsView", "SubjectNotifier", "no_subject_notice"]

log = logging.getLogger("authserver.keys")

SubjectNotifier = Callable[[str, str], Awaitable[None]]  # (tenant_id, subject): tell the other replicas


async def no_subject_notice(tenant_id: str, subject: str) -> None:
    """The notifier of a single replica: nobody else to tell."""
    return None


@dataclass(frozen=True, slots=True)
class SubjectLimitsView:
    subject: str
    rate_limits: list[dict[str, int]]
    updated_at: int

    def as_dict(self) -> dict[str, object]:
        return {"subject": self.subject, "rate_limits": self.rate_limits, "updated_at": self.updated_at}


class SubjectLimitsService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], cache: KeyCache,
                 notify: SubjectNotifier = no_subject_notice, clock: Callable[[], float] = time.time) -> None:
        self.sessions = sessions
        self.cache = cache
        self.notify = notify
        self.clock = clock

    async def get(self, tenant_id: str, subject: str) -> SubjectLimitsView:
        tenant_of(self.cache, tenant_id)
        async with self.sessions() as s:
            row = await s.get(SubjectLimits, (tenant_id, subject))
        if row is None or not row.rate_limits:
            raise NotFound("this subject has no shared rate limits")
        return SubjectLimitsView(row.subject, list(row.rate_limits), row.updated_at)

    async def set(self, tenant_id: str, subject: str, limits: list[RateLimit], actor: Actor) -> SubjectLimitsView:
        """Replace the subject's shared limits (at least one window)."""
        tenant_of(self.cache, tenant_id)
        dicts = [msgspec.structs.asdict(r) for r in limits]
        row = await self._write(tenant_id, subject, dicts, actor, "subject.set_limits")
        return SubjectLimitsView(row.subject, dicts, row.updated_at)

    async def clear(self, tenant_id: str, subject: str, actor: Actor) -> SubjectLimitsView:
        """Remove the subject's shared limits (404 if it has none)."""
        await self.get(tenant_id, subject)
        row = await self._write(tenant_id, subject, None, actor, "subject.clear_limits")
        return SubjectLimitsView(row.subject, [], row.updated_at)

    async def _write(self, tenant_id: str, subject: str, limits: list[dict[str, int]] | None, actor: Actor,
                     action: str) -> SubjectLimits:
        now = self.clock()
        async with self.sessions() as s, s.begin():
            row = await s.get(SubjectLimits, (tenant_id, subject), with_for_update=True)
            if row is None:
                row = SubjectLimits(tenant_id=tenant_id, subject=subject)
                s.add(row)
            # a cleared subject keeps its row (rate_limits None): replicas find the change by changed_at
            row.rate_limits, row.updated_at, row.changed_at = limits, int(now), int(now * 1000)
            # the subject can be longer than an audit target: it goes in the details
            s.add(audit_event(tenant_id, actor, action, None, {"subject": subject, "rate_limits": limits}, now))
        self.cache.apply_subject(row)
        await self.notify(tenant_id, subject)
        log.info("%s", action, extra={"tenant": tenant_id, "action": action})
        return row
