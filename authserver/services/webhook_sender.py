"""The webhook sender: delivers the outbox, at least once, from inside `authserver serve`.

Each delivery row is claimed with a lease before it is sent (a row lock with
SKIP LOCKED on PostgreSQL, then a conditional UPDATE that also decides on
SQLite), so replicas never send the same delivery at the same time. The
attempt is counted at the claim: a sender killed mid-send leaves a lease that
runs out, and another sender (or the restarted one) sends it again, with the
same webhook-id, so the receiver can drop the duplicate. A failed attempt
(timeout, connection error, non-2xx) is retried with exponential backoff and
jitter until ``webhook_max_attempts``, then the delivery is "failed"; a replay
(services/webhooks.py) queues it again.

The periodic scan turns keys nearing their expiry or the end of a roll's grace
into audit events (``key.expiring``, ``key.grace_ending``), once per key and
kind (the ``key_notices`` primary key decides between replicas); the outbox
hook queues their deliveries like any other key event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import httpx
from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import keys.webhooks as wh

from ..db.models import ApiKey, KeyNotice, Tenant, WebhookDelivery, WebhookEndpoint, WebhookEvent
from ..errors import InvalidInput
from ..settings import Settings
from .common import Actor, audit_event
from .webhook_egress import EgressRefused, guarded_transport
from .webhooks import DEFAULT_EXPIRING_DAYS, check_url

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

__all__ = ["WebhookSender", "backoff_seconds", "payload_body"]

log = logging.getLogger("authserver.webhooks")
_DAY = 86400
_SCAN_ACTOR = Actor("system")


def payload_body(payload: dict[str, Any]) -> bytes:
    """The body sent for an event: the same bytes at every attempt and replay
    (sorted keys: PostgreSQL's JSONB does not keep their order)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def backoff_seconds(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Wait before the next attempt after ``attempts`` failed ones: exponential,
    capped, half of it random so that many retries do not arrive together."""
    delay: float = min(cap, base * 2.0 ** max(0, attempts - 1))
    return delay / 2 + rng.uniform(0, delay / 2)


@dataclass(frozen=True, slots=True)
class _Job:
    delivery_id: str
    attempts: int
    event: WebhookEvent
    endpoint: WebhookEndpoint


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    status_code: int | None
    error: str | None


class WebhookSender:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], box: wh.SecretBox, *,
                 owner: str, clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, batch: int = 20,
                 on_result: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.sessions = sessions
        self.box = box
        self.owner = owner  # this replica's id: whose lease a delivery is under
        self.clock = clock
        self.rng = rng or random.Random()
        self.batch = batch
        self.transport = transport
        self.on_result = on_result  # metrics: delivered, retry, failed, cancelled
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:  # made at the first send: the CLI builds a sender it never runs
            # no redirects: a 3xx answer is a failed attempt, never a request elsewhere
            self._http = httpx.AsyncClient(timeout=self.settings.webhook_timeout_seconds, follow_redirects=False,
                                           trust_env=False,
                                           transport=self.transport or guarded_transport(self.settings))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def run(self) -> None:
        """Forever: scan for expiring keys now and then, send what is due."""
        next_scan = 0.0
        while True:
            sent = 0
            try:
                if self.clock() >= next_scan:
                    await self.scan_once()
                    next_scan = self.clock() + self.settings.webhook_scan_seconds
                sent = await self.send_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is down, say: try again at the next poll
                log.warning("webhooks: %s", type(exc).__name__)
            if sent < self.batch:
                await asyncio.sleep(self.settings.webhook_poll_seconds)

    # --- the outbox ------------------------------------------------------------

    async def send_due(self) -> int:
        """Claim and send up to one batch of due deliveries; how many were claimed."""
        jobs = await self._claim()
        results = await asyncio.gather(*(self._deliver(job) for job in jobs), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):  # its lease runs out and it is sent again
                log.warning("webhooks: recording an attempt failed (%s)", type(result).__name__)
        return len(jobs)

    async def _claim(self) -> list[_Job]:
        now = self._now_ms()
        free = or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now)
        due = (WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now, free)
        async with self.sessions() as s, s.begin():
            # PostgreSQL: rows another sender has locked are skipped, not waited for
            ids = list(await s.scalars(select(WebhookDelivery.id).where(*due)
                                       .order_by(WebhookDelivery.next_attempt_at).limit(self.batch)
                                       .with_for_update(skip_locked=True)))
            claimed: list[str] = []
            for delivery_id in ids:
                # the decision: only a row still pending and unleased is ours
                result = await s.execute(
                    update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, *due)
                    .values(lease_owner=self.owner, lease_until=now + int(self.settings.webhook_lease_seconds * 1000),
                            attempts=WebhookDelivery.attempts + 1, last_attempt_at=now)
                    .execution_options(synchronize_session=False))
                if cast("CursorResult[Any]", result).rowcount == 1:
                    claimed.append(delivery_id)
            if not claimed:
                return []
            rows = await s.execute(
                select(WebhookDelivery.id, WebhookDelivery.attempts, WebhookEvent, WebhookEndpoint)
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(WebhookDelivery.id.in_(claimed)))
            return [_Job(d, a, e, ep) for d, a, e, ep in rows]

    async def _deliver(self, job: _Job) -> None:
        if job.endpoint.deleted_at is not None:
            await self._finish(job, status="cancelled", outcome=_Outcome(False, None, "endpoint removed"))
            return
        outcome = await self._send(job)
        if outcome.ok:
            await self._finish(job, status="delivered", outcome=outcome)
        elif job.attempts >= self.settings.webhook_max_attempts:
            log.warning("webhook delivery %s failed after %d attempts (%s)", job.delivery_id, job.attempts,
                        outcome.error, extra={"tenant": job.event.tenant_id})
            await self._finish(job, status="failed", outcome=outcome)
        else:
            wait = backoff_seconds(job.attempts, self.settings.webhook_retry_base_seconds,
                                   self.settings.webhook_retry_max_seconds, self.rng)
            await self._finish(job, status="pending", outcome=outcome,
                               next_attempt_at=self._now_ms() + int(wait * 1000))

    async def _send(self, job: _Job) -> _Outcome:
        try:
            url = check_url(job.endpoint.url, self.settings)  # the settings may have changed since
            secret = self.box.open(job.endpoint.secret_sealed, job.endpoint.id)
        except InvalidInput as exc:
            return _Outcome(False, None, f"url refused: {exc.detail}"[:200])
        except wh.BadSecret:
            return _Outcome(False, None, "the signing secret does not open with this server's webhook key")
        body = payload_body(job.event.payload)
        headers = wh.headers(secret, job.event.id, int(self.clock()), body)
        headers["content-type"] = "application/json"
        headers["user-agent"] = "authserver-webhooks"
        try:
            # one deadline for the whole attempt (httpx's timeouts are per read, so
            # a trickling receiver could outlast the lease); the body is never read
            async with asyncio.timeout(self.settings.webhook_timeout_seconds):
                async with self.http.stream("POST", url, content=body, headers=headers) as response:
                    status = response.status_code
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome(False, None, "timeout")
        except httpx.ConnectError as exc:
            # a refused address says why (the admin needs to know); other connect errors by class only
            refused = isinstance(exc.__cause__, EgressRefused)
            return _Outcome(False, None, str(exc)[:200] if refused else f"connection failed ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return _Outcome(False, None, f"connection failed ({type(exc).__name__})")
        if 200 <= status < 300:
            return _Outcome(True, status, None)
        return _Outcome(False, status, f"HTTP {status}")

    async def _finish(self, job: _Job, *, status: str, outcome: _Outcome, next_attempt_at: int | None = None) -> None:
        if self.on_result is not None:
            self.on_result("retry" if status == "pending" else status)
        now = self._now_ms()
        values: dict[str, Any] = {"status": status, "lease_owner": None, "lease_until": None,
                                  "last_status_code": outcome.status_code, "last_error": outcome.error}
        if status == "delivered":
            values["delivered_at"] = now
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        async with self.sessions() as s, s.begin():
            # only under our own lease: if it ran out and another sender took the
            # row, that sender's outcome is the one to keep
            await s.execute(update(WebhookDelivery)
                            .where(WebhookDelivery.id == job.delivery_id, WebhookDelivery.lease_owner == self.owner)
                            .values(**values).execution_options(synchronize_session=False))

    # --- key.expiring and key.grace_ending ------------------------------------

    async def scan_once(self) -> int:
        """Audit (and so announce) keys nearing expiry or the end of their grace; how many."""
        now = int(self.clock())
        days = func.coalesce(Tenant.key_expiring_days, DEFAULT_EXPIRING_DAYS)
        live = (ApiKey.kind == "api", ApiKey.revoked_at.is_(None))
        expiring = (select(ApiKey.tenant_id, ApiKey.id, ApiKey.expires_at)
                    .join(Tenant, Tenant.id == ApiKey.tenant_id)
                    .where(*live, ApiKey.grace_ends_at.is_(None), ApiKey.expires_at > now,
                           ApiKey.expires_at <= now + days * _DAY))
        grace = (select(ApiKey.tenant_id, ApiKey.id, ApiKey.grace_ends_at)
                 .where(*live, ApiKey.grace_ends_at > now,
                        ApiKey.grace_ends_at <= now + self.settings.webhook_grace_ending_seconds))
        count = 0
        for kind, query, field in (("key.expiring", expiring, "expires_at"),
                                   ("key.grace_ending", grace, "grace_ends_at")):
            noticed = select(KeyNotice.key_id).where(KeyNotice.kind == kind, KeyNotice.key_id == ApiKey.id)
            async with self.sessions() as s:
                rows = (await s.execute(query.where(~noticed.exists()))).all()
            for tenant_id, kid, at in rows:
                count += await self._notice(tenant_id, kid, kind, {field: at})
        return count

    async def _notice(self, tenant_id: str, kid: str, kind: str, details: dict[str, Any]) -> int:
        async with self.sessions() as s, s.begin():
            insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
            result = await s.execute(insert(KeyNotice).values(key_id=kid, kind=kind, at=int(self.clock()))
                                     .on_conflict_do_nothing())
            if cast("CursorResult[Any]", result).rowcount != 1:
                return 0  # another replica gave this notice
            s.add(audit_event(tenant_id, _SCAN_ACTOR, kind, kid, details, self.clock()))
        return 1

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)
