"""What the admin's key pages (/portal/keys) and a consumer's (/portal/my/keys)
share: a signed-in request that renders pages and keeps its session, its CSRF
checked form, and the key pages' steps: a key's page with its usage chart, the
roll and revoke forms, the page that shows a new key once, the revoke flash and redirect, the answer to a form
sent twice. The services behind them differ (KeyLifecycle for an admin,
ConsumerPortal for a consumer, each with its own rules); the pages do not.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import FormMultiDict
from litestar.di import Provide
from litestar.response import Redirect

from ..api.views import key_view
from ..core import Core
from ..db.models import ApiKey
from ..errors import InvalidInput
from ..schemas import MAX_EXPIRES_IN
from ..services.usage import UsageQueries
from . import session as sessions
from .render import fmt_duration, page
from .usage_chart import DAYS, daily_usage

AnyRequest = Request[Any, Any, Any]
AnyConnection = ASGIConnection[Any, Any, Any, Any]

GRACE_UNITS = [("seconds", 1), ("minutes", 60), ("hours", 3600), ("days", 86400)]
MAX_EXPIRY_DAYS = MAX_EXPIRES_IN // 86400
# what an <input type=number> sends: digits, a point, an exponent; no sign, inf, nan or "_"
_DECIMAL = re.compile(r"(?=.{1,32}$)([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?")
KEY_SHOWN_ONCE = ("This form was already sent and its key was shown once. Keys are never shown again: "
                  "if you did not copy it, revoke it and create a new one.")


class CsrfFailed(Exception):
    pass


class SignedIn:
    """A signed-in portal request. A plain class: Litestar passes it to handlers
    as is (a dataclass would be converted field by field)."""

    __slots__ = ("request", "core", "session")

    def __init__(self, request: AnyRequest, core: Core, session: sessions.PortalSession) -> None:
        self.request = request
        self.core = core
        self.session = session

    def context(self) -> dict[str, Any]:
        """What every page of this kind of session shows (base.html's part)."""
        raise NotImplementedError

    async def page(self, template: str, status: int = 200, *, headers: dict[str, str] | None = None,
                   **context: Any) -> Response[Any]:
        ctx = {**self.context(), **context}  # the flash is popped before the session is saved
        await self.save()
        return page(template, status, headers, **ctx)

    async def save(self) -> None:
        if self.session.dirty:
            await sessions.save(self.request, self.session)

    # --- the key pages' steps ---------------------------------------------------

    def key(self, row: ApiKey, now: float) -> dict[str, Any]:
        """A key as the pages show it."""
        return display(key_view(row, now, self.core.settings), now)

    async def key_page(self, template: str, row: ApiKey, usage: UsageQueries, **context: Any) -> Response[Any]:
        """A key's page: its facts and its calls per day over the last DAYS days."""
        now = self.core.clock()
        chart = await daily_usage(usage, row.tenant_id, row.id, now)
        view = self.key(row, now)
        return await self.page(template, title=view["name"] or "API key", view=view, chart=chart, days=DAYS,
                               now=now, **context)

    def grace(self, form: Any) -> int:
        return parse_grace(form, self.core.settings.max_grace_seconds)

    async def roll_form(self, template: str, row: ApiKey, **context: Any) -> Response[Any]:
        settings = self.core.settings
        grace_value, grace_unit = grace_default(settings.default_grace_seconds)
        return await self.page(template, title="Roll a key", view=self.key(row, self.core.clock()),
                               grace_value=grace_value, grace_unit=grace_unit, grace_units=GRACE_UNITS,
                               max_grace_seconds=settings.max_grace_seconds,
                               gateway_cache_seconds=settings.gateway_cache_seconds, **context)

    async def revoke_form(self, template: str, row: ApiKey, **context: Any) -> Response[Any]:
        return await self.page(template, title="Revoke a key", view=self.key(row, self.core.clock()),
                               gateway_cache_seconds=self.core.settings.gateway_cache_seconds, **context)

    async def shown_once(self, title: str, key: str, row: ApiKey, previous: ApiKey | None = None,
                         **context: Any) -> Response[Any]:
        """The one answer that carries a full key (never cached)."""
        now = self.core.clock()
        return await self.page("key_secret.html", 201, headers=SECRET_PAGE_HEADERS, title=title, key=key,
                               view=self.key(row, now), previous=self.key(previous, now) if previous else None,
                               gateway_cache_seconds=self.core.settings.gateway_cache_seconds, **context)

    async def revoked(self, row: ApiKey, to: str, what: str = "Key", after: str = "") -> Response[Any]:
        """Back to the list, which says so once."""
        label = f"“{row.name}” " if row.name else ""
        self.session.add_flash("ok", f"{what} {label}({row.prefix}…{row.last4}) is revoked{after}.")
        await self.save()
        return Redirect(to, status_code=303)

    async def sent_twice(self, form: FormMultiDict, detail: str = KEY_SHOWN_ONCE,
                         **context: Any) -> Response[Any] | None:
        """A 409 page for a create form sent again (a reload or a second click:
        never mint twice from one form); None for the first time."""
        if self.session.use_form_nonce(form.get("form_nonce")):
            return None
        return await self.page("error.html", 409, title="Already submitted", code=409, detail=detail, **context)


class Posted:
    """A signed-in POST whose form carries the session's CSRF token."""

    __slots__ = ("ctx", "form")

    def __init__(self, ctx: SignedIn, form: FormMultiDict) -> None:
        self.ctx = ctx
        self.form = form


C = TypeVar("C", bound=SignedIn)
P = TypeVar("P", bound=Posted)


def dependencies(signed_in: Callable[[AnyConnection], Awaitable[C]], posted: type[P]) -> dict[str, Provide]:
    """``ctx`` (the signed-in request) and ``posted`` (and its form, CSRF checked)."""

    async def provide_ctx(request: AnyRequest) -> Any:
        return await signed_in(request)

    async def provide_posted(request: AnyRequest) -> Any:
        ctx = await signed_in(request)
        form = await request.form()
        if not ctx.session.check_csrf(form.get("csrf_token")):
            raise CsrfFailed()
        return posted(ctx, form)

    return {"ctx": Provide(provide_ctx), "posted": Provide(provide_posted)}


# --- what the forms send --------------------------------------------------------

SECRET_PAGE_HEADERS = {"Cache-Control": "no-store, max-age=0", "Pragma": "no-cache", "Expires": "0"}


def display(view: dict[str, Any], now: float) -> dict[str, Any]:
    state = view["state"]
    label = {"active": "Active", "rolling": "Rolling", "rolled": "Expired (rolled)", "expired": "Expired",
             "revoked": "Revoked"}.get(state, state)
    return {**view, "state_label": label, "can_roll": state == "active", "can_revoke": state in ("active", "rolling")}


def parse_expiry(values: Mapping[str, Any]) -> int | None:
    """A mint form's expiry (never, or a whole number of days) as seconds."""
    expires_in = None
    if values["expiry"] == "days":
        try:
            days = int(values["expiry_days"])
        except ValueError:
            raise InvalidInput("The expiry must be a whole number of days.") from None
        if not 1 <= days <= MAX_EXPIRY_DAYS:
            raise InvalidInput(f"The expiry must be between 1 and {MAX_EXPIRY_DAYS} days.")
        expires_in = days * 86400
    elif values["expiry"] not in ("never", ""):
        raise InvalidInput("Choose an expiry.")
    return expires_in


def grace_default(seconds: int) -> tuple[int, str]:
    for unit, n in reversed(GRACE_UNITS[:3]):  # hours, minutes, seconds
        if seconds % n == 0 and seconds >= n:
            return seconds // n, unit
    return seconds, "seconds"


def parse_grace(form: Any, max_seconds: int) -> int:
    """The form's amount and unit as whole seconds, within the roll service's bound
    (``max_grace_seconds``). Only plain decimal numbers: float() alone would also
    take inf, nan and 1_000, and 1e308 days overflows int()."""
    raw_value, unit = form.get("grace_value"), form.get("grace_unit")
    factor = dict(GRACE_UNITS).get(unit if isinstance(unit, str) else "")
    raw = raw_value.strip() if isinstance(raw_value, str) else ""
    if factor is None or not _DECIMAL.fullmatch(raw):
        raise InvalidInput("The grace period must be a number of seconds, minutes, hours or days, 0 or more.")
    seconds = float(raw) * factor
    if not seconds <= max_seconds:
        raise InvalidInput(f"The grace period can be at most {fmt_duration(max_seconds)}.")
    return int(round(seconds))
