"""The consumer portal: an API producer's customer manages the keys of their
own subject, signed in by a one-time link (``POST /v1/portal/sessions``).

    GET  /portal/sign-in/{token}          redeem the link once: a new consumer session
    GET  /portal/my/keys                  their keys: state, last used, calls
    GET  /portal/my/keys/new              create form (within the policy)
    POST /portal/my/keys                  create: the key is shown once
    GET  /portal/my/keys/{id}/roll        roll confirmation
    POST /portal/my/keys/{id}/roll        roll with grace: the new key shown once
    GET  /portal/my/keys/{id}/revoke      revoke confirmation
    POST /portal/my/keys/{id}/revoke      revoke now
    POST /portal/my/logout                sign out (back to the producer's page)

The same session machinery as the admin pages (portal/session.py), with
``kind`` "consumer"; every rule is the service's (services/consumers.py): a key
of another subject is "not found" wherever its id comes from.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath
from litestar.response import Redirect
from litestar.types import ExceptionHandlersMap

from ..auth import charge_consumer, client_addr, core_of, count_auth_failure, live_admin_key
from ..core import Core
from ..errors import Conflict, Forbidden, InvalidInput, RateLimited, ServiceError
from ..schemas import ConsumerPolicy
from ..services.consumers import Consumer, ConsumerPortal
from . import keypages
from . import session as sessions
from .keypages import CsrfFailed, SignedIn, parse_expiry
from .render import error_page, fmt_duration, page, security_headers
from .views import EXCEPTION_HANDLERS as ADMIN_EXCEPTION_HANDLERS

__all__ = ["CONSUMER_PORTAL"]

AnyRequest = Request[Any, Any, Any]
AnyConnection = ASGIConnection[Any, Any, Any, Any]
HOME = "/portal/my/keys"
PAGE_SIZE = 20
LINK_REFUSED = ("This sign-in link cannot be used: it was already used, it has expired, or it is not one of ours. "
                "Go back to the application you came from and open the key portal again.")
ISSUER_CLI = "cli"  # a link made by `authserver portal session` has no admin key behind it


class ConsumerSignedOut(Exception):
    def __init__(self, ended: bool = False) -> None:
        self.ended = ended


class CCtx(SignedIn):
    """A signed-in consumer's request."""

    __slots__ = ("consumer",)

    def __init__(self, request: AnyRequest, core: Core, consumer: Consumer, session: sessions.PortalSession) -> None:
        super().__init__(request, core, session)
        self.consumer = consumer

    def context(self) -> dict[str, Any]:
        return {"consumer": self.consumer, "subject": self.consumer.subject, "return_url": self.session.return_url,
                "csrf": self.session.csrf, "flash": self.session.pop_flash(), "keys_href": HOME}


_CTX_KEY = "consumer_ctx"


async def _signed_in(connection: AnyConnection) -> CCtx:
    """The consumer session, re-checked on every request: the admin key that
    asked for the link must still be live (revoking it ends its consumers' sessions)."""
    cached = connection.state.get(_CTX_KEY)
    if isinstance(cached, CCtx):
        return cached
    request: AnyRequest = connection  # type: ignore[assignment]  # the portal is HTTP only
    session = await sessions.load(request)
    if session is None:
        raise ConsumerSignedOut()
    if session.kind != "consumer" or session.subject is None or session.policy is None:
        raise Forbidden("These pages are for customers signed in from their provider's application. "
                        "Administrators manage keys at /portal/keys.")
    core = core_of(request)
    try:
        policy = msgspec.convert(session.policy, ConsumerPolicy)
    except msgspec.ValidationError:
        policy = None
    if policy is None or core.cache.get(session.tenant) is None or (
            session.kid != ISSUER_CLI and live_admin_key(core, session.tenant, session.kid) is None):
        await sessions.destroy(request, session.id)
        raise ConsumerSignedOut(ended=True)
    await charge_consumer(request, session.tenant, session.subject)
    consumer = Consumer(session.tenant, session.subject, policy, client_addr(request))
    ctx = connection.state[_CTX_KEY] = CCtx(request, core, consumer, session)
    return ctx


async def _guard(connection: AnyConnection, _: BaseRouteHandler) -> None:
    await _signed_in(connection)


class CPosted(keypages.Posted):
    __slots__ = ()
    ctx: CCtx


DEPENDENCIES = keypages.dependencies(_signed_in, CPosted)
SIGNED_IN = [_guard]
KeyId = FromPath[str]  # checked by the services: an id that cannot be a key is not found


# --- errors: the admin portal's pages, with the way back to this portal -----------

def on_signed_out(request: AnyRequest, exc: ConsumerSignedOut) -> Response[Any]:
    detail = ("Your session ended." if exc.ended else "You are not signed in.") + \
        " Open the key portal again from the application you came from."
    resp = error_page(request, 401, "Signed out", detail, back_href=None)
    resp.set_cookie(sessions.session_cookie(request, None))
    return resp


def on_service_error(request: AnyRequest, exc: ServiceError) -> Response[Any]:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    titles = {401: "Not signed in", 403: "Not allowed", 404: "Not found", 409: "Not possible now",
              422: "Invalid input", 429: "Too many requests", 503: "Temporarily unavailable"}
    return error_page(request, exc.status, titles.get(exc.status, "Error"), exc.detail, headers, back_href=HOME)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    **ADMIN_EXCEPTION_HANDLERS,
    ConsumerSignedOut: on_signed_out,
    ServiceError: on_service_error,
}


# --- sign in / out ---------------------------------------------------------------

@get("/sign-in/{token:str}")
async def sign_in(request: AnyRequest, consumers: NamedDependency[ConsumerPortal],
                  token: FromPath[str]) -> Response[Any]:
    grant = await consumers.redeem(token, client_addr(request))
    if grant is None:
        try:
            await count_auth_failure(request)  # guessing links costs the address's failure budget
        except RateLimited as exc:
            return error_page(request, 429, "Too many requests", "Too many failed sign-ins. Wait a minute.",
                              {"Retry-After": str(exc.retry_after)}, back_href=None)
        return error_page(request, 401, "This link cannot be used", LINK_REFUSED, back_href=None)
    session = await sessions.create(request, grant.tenant_id, grant.created_by, kind="consumer",
                                    subject=grant.subject, policy=msgspec.to_builtins(grant.policy),
                                    return_url=grant.return_url)
    # A page that moves on by itself rather than a redirect: the browser arrived from the
    # producer's site, and a SameSite=Strict cookie is not sent on a redirect that
    # continues a cross-site navigation; a navigation started by our own page is same-site.
    resp = page("signed_in.html", 200, {"Cache-Control": "no-store"}, title="Signed in", subject=grant.subject,
                next_href=HOME)
    resp.set_cookie(sessions.session_cookie(request, session))
    return resp


@post("/my/logout", status_code=303)
async def sign_out(request: AnyRequest) -> Response[Any]:
    session = await sessions.load(request)
    back = None
    if session is not None:
        form = await request.form()
        if not session.check_csrf(form.get("csrf_token")):
            raise CsrfFailed()
        back = session.return_url if session.kind == "consumer" else None
        await sessions.destroy(request, session.id)
    resp: Response[Any] = (Redirect(back, status_code=303) if back else
                           page("signed_in.html", 200, {"Cache-Control": "no-store"}, title="Signed out"))
    resp.set_cookie(sessions.session_cookie(request, None))
    return resp


# --- keys ---------------------------------------------------------------------------

def _policy_view(p: ConsumerPolicy) -> dict[str, Any]:
    return {"max_keys": p.max_keys, "allowed_scopes": list(p.allowed_scopes),
            "max_lifetime": fmt_duration(p.max_lifetime) if p.max_lifetime else None,
            "max_days": p.max_lifetime // 86400 if p.max_lifetime else None}


@get("/my/keys", guards=SIGNED_IN, dependencies=DEPENDENCIES)
async def my_keys(request: AnyRequest, ctx: NamedDependency[CCtx],
                  consumers: NamedDependency[ConsumerPortal]) -> Response[Any]:
    cursor = request.query_params.get("cursor") or None  # checked by the query service
    found = await consumers.list_keys(ctx.consumer, limit=PAGE_SIZE, cursor=cursor)
    now = ctx.core.clock()
    items = []
    for row in found.items:
        view = ctx.key(row, now)
        view["calls"] = await consumers.usage.totals(ctx.consumer.tenant_id, row.id)
        items.append(view)
    return await ctx.page("my_keys.html", title="Your API keys", items=items, cursor=cursor,
                          next_cursor=found.next_cursor, policy=_policy_view(ctx.consumer.policy),
                          active=await consumers.active_count(ctx.consumer),
                          gateway_cache_seconds=ctx.core.settings.gateway_cache_seconds)


def _new_form(ctx: CCtx, values: dict[str, Any] | None = None) -> dict[str, Any]:
    p = ctx.consumer.policy
    default_days = str(min(90, p.max_lifetime // 86400)) if p.max_lifetime and p.max_lifetime >= 86400 else "90"
    return {"title": "Create an API key", "form_nonce": ctx.session.new_form_nonce(),
            "values": values or {"name": "", "scopes": [], "expiry": "days" if p.max_lifetime else "never",
                                 "expiry_days": default_days},
            "policy": _policy_view(p), "prefix": ctx.core.cache.get(ctx.consumer.tenant_id).info.key_prefix  # type: ignore[union-attr]  # checked at sign-in and per request
            }


@get("/my/keys/new", guards=SIGNED_IN, dependencies=DEPENDENCIES)
async def my_key_new(ctx: NamedDependency[CCtx]) -> Response[Any]:
    return await ctx.page("my_key_new.html", **_new_form(ctx))


def _form_values(form: Any) -> dict[str, Any]:
    values: dict[str, Any] = {k: form.get(k) for k in ("name", "expiry", "expiry_days")}
    values = {k: v if isinstance(v, str) else "" for k, v in values.items()}
    values["scopes"] = [s for s in form.getall("scopes", []) if isinstance(s, str) and s]
    return values


@post("/my/keys", status_code=201, guards=SIGNED_IN, dependencies=DEPENDENCIES)
async def my_key_create(posted: NamedDependency[CPosted], consumers: NamedDependency[ConsumerPortal]) -> Response[Any]:
    ctx, form = posted.ctx, posted.form
    if again := await ctx.sent_twice(form, back_href=HOME):
        return again
    values = _form_values(form)  # any "subject" field is ignored: the key is always the consumer's
    try:
        name = values["name"].strip()
        if not name:
            raise InvalidInput("Give the key a name, so you can find it again.")
        row, minted = await consumers.mint(ctx.consumer, name, values["scopes"], parse_expiry(values))
    except (InvalidInput, Conflict) as exc:
        status = exc.status
        return await ctx.page("my_key_new.html", status, error=exc.detail, **_new_form(ctx, values))
    return await ctx.shown_once("Key created", minted.key, row)


@get("/my/keys/{key_id:str}", guards=SIGNED_IN, dependencies=DEPENDENCIES)
async def my_key_detail(ctx: NamedDependency[CCtx], consumers: NamedDependency[ConsumerPortal],
                        key_id: KeyId) -> Response[Any]:
    row = await consumers.get(ctx.consumer, key_id)  # another subject's key: 404
    return await ctx.key_page("my_key.html", row, consumers.usage)


@get("/my/keys/{key_id:str}/roll", guards=SIGNED_IN, dependencies=DEPENDENCIES)
async def my_key_roll_form(ctx: NamedDependency[CCtx], consumers: NamedDependency[ConsumerPortal],
                           key_id: KeyId) -> Response[Any]:
    return await ctx.roll_form("my_key_confirm.html", await consumers.get(ctx.consumer, key_id), action="roll")


@post("/my/keys/{key_id:str}/roll", status_code=201, guards=SIGNED_IN, dependencies=DEPENDENCIES)
async def my_key_roll(posted: NamedDependency[CPosted], consumers: NamedDependency[ConsumerPortal],
                      key_id: KeyId) -> Response[Any]:
    ctx = posted.ctx
    await consumers.get(ctx.consumer, key_id)  # another subject's key: 404 before the form is even read
    grace = ctx.grace(posted.form)
    new, minted, old = await consumers.roll(ctx.consumer, key_id, grace)
    return await ctx.shown_once("Key rolled", minted.key, new, old, grace_seconds=grace)


@get("/my/keys/{key_id:str}/revoke", guards=SIGNED_IN, dependencies=DEPENDENCIES)
async def my_key_revoke_form(ctx: NamedDependency[CCtx], consumers: NamedDependency[ConsumerPortal],
                             key_id: KeyId) -> Response[Any]:
    return await ctx.revoke_form("my_key_confirm.html", await consumers.get(ctx.consumer, key_id), action="revoke")


@post("/my/keys/{key_id:str}/revoke", status_code=303, guards=SIGNED_IN, dependencies=DEPENDENCIES)
async def my_key_revoke(posted: NamedDependency[CPosted], consumers: NamedDependency[ConsumerPortal],
                        key_id: KeyId) -> Response[Any]:
    ctx = posted.ctx
    return await ctx.revoked(await consumers.revoke(ctx.consumer, key_id), HOME)


@get("/my", guards=SIGNED_IN, dependencies=DEPENDENCIES)
async def my_home() -> Response[Any]:
    return Redirect(HOME, status_code=303)


CONSUMER_PORTAL = Router(
    path="/portal",
    route_handlers=[sign_in, sign_out, my_home, my_keys, my_key_new, my_key_create, my_key_detail, my_key_roll_form,
                    my_key_roll, my_key_revoke_form, my_key_revoke],
    middleware=[security_headers],
    exception_handlers=EXCEPTION_HANDLERS,
    include_in_schema=False,
)
