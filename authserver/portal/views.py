"""The developer portal: server-rendered pages over the same job services the
JSON management API uses, injected the same way (so the JWKS reflects every
change at once).

    GET  /portal/login              sign-in form (a tenant admin key)
    POST /portal/login              sign in: 303 to the key list, or 401 (generic)
    POST /portal/logout             sign out
    GET  /portal/keys               list: filter by state, search name/subject/id, paginated
    GET  /portal/keys/new           mint form
    POST /portal/keys               mint: the key is shown once on the answer page
    GET  /portal/keys/{id}          one key: its facts, last use and a 14-day usage chart
    GET  /portal/keys/{id}/roll     roll confirmation (the <dialog> of the list without JS)
    POST /portal/keys/{id}/roll     roll: the new key shown once
    GET  /portal/keys/{id}/revoke   revoke confirmation
    POST /portal/keys/{id}/revoke   revoke now
    GET  /portal/audit              the tenant's audit log

Every POST carries a CSRF token: the session's, or before sign-in a signed
double-submit cookie. A full key is only ever in the body of the one answer
that creates it (Cache-Control: no-store); never in the session, a cookie, a
redirect or a log.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath
from litestar.response import Redirect
from litestar.types import ExceptionHandlersMap, Guard

from ..api.views import audit_view
from ..auth import (
    READ,
    WRITE,
    Admin,
    admin_from_session,
    client_addr,
    core_of,
    count_auth_failure,
    verify_admin_key,
)
from ..core import Core
from ..errors import Forbidden, InvalidInput, RateLimited, ServiceError
from ..problems import is_connection_error
from ..schemas import KeySpec, key_spec
from ..services import Actor, KeyLifecycle, KeyQueries
from . import keypages
from . import session as sessions
from .keypages import GRACE_UNITS, CsrfFailed, SignedIn, grace_default, parse_expiry
from .render import error_page, log, page

AnyRequest = Request[Any, Any, Any]

PAGE_SIZE = 20
AUDIT_PAGE_SIZE = 50
STATE_CHOICES = [
    ("all", "All"), ("active", "Active"), ("rolling", "Rolling (in grace)"), ("live", "Live (active + rolling)"),
    ("expired", "Expired"), ("revoked", "Revoked"),
]
KeyId = FromPath[str]  # checked by the services: an id that cannot be a key is not found
SIGN_IN_FAILED = "Sign-in failed. Check the admin key and try again."


# --- errors ---------------------------------------------------------------

class SignedOut(Exception):
    """No valid session: go to the sign-in page."""

    def __init__(self, ended: bool = False) -> None:
        self.ended = ended


def on_signed_out(request: AnyRequest, exc: SignedOut) -> Response[Any]:
    resp: Response[Any] = Redirect("/portal/login?ended=1" if exc.ended else "/portal/login", status_code=303)
    resp.set_cookie(sessions.session_cookie(request, None))
    resp.headers["Cache-Control"] = "no-store"
    return resp


def on_csrf_failed(request: AnyRequest, exc: CsrfFailed) -> Response[Any]:
    return error_page(
        request, 403, "This form has expired",
        "The form was not sent from a page of this portal, or it is too old. Go back, reload the page and try again.",
    )


def on_service_error(request: AnyRequest, exc: ServiceError) -> Response[Any]:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    titles = {401: "Not signed in", 403: "Not allowed", 404: "Not found", 409: "Not possible now",
              422: "Invalid input", 429: "Too many requests", 503: "Temporarily unavailable"}
    return error_page(request, exc.status, titles.get(exc.status, "Error"), exc.detail, headers)


def _where(request: AnyRequest) -> str:
    """The route's template, not the raw path, for the log: a path may carry a secret
    (a consumer sign-in link's token)."""
    template = request.scope.get("path_template")
    return template if isinstance(template, str) else request.url.path


def on_http_error(request: AnyRequest, exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if status >= 500:
        log.error("portal: http error %s on %s %s", status, request.method, _where(request))
        return error_page(request, status, "Server error", "The server could not handle the request.")
    detail = exc.detail if isinstance(exc.detail, str) else "The request could not be handled."
    if status == 400:
        detail = "The request was not understood."
    return error_page(request, status, "Error", detail, dict(exc.headers or {}) or None)


def on_unexpected(request: AnyRequest, exc: Exception) -> Response[Any]:
    if is_connection_error(exc):
        log.warning("portal: database unavailable during %s %s: %s", request.method, _where(request),
                    type(exc).__name__)
        return error_page(request, 503, "Temporarily unavailable",
                          "The database is unavailable; nothing was changed. Try again in a moment.",
                          {"Retry-After": "2"})
    log.exception("portal: unhandled error on %s %s", request.method, _where(request))
    return error_page(request, 500, "Server error", "The server could not handle the request.")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    SignedOut: on_signed_out,
    CsrfFailed: on_csrf_failed,
    ServiceError: on_service_error,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}


# --- the signed-in admin ---------------------------------------------------

class Ctx(SignedIn):
    """A signed-in administrator's request (``nav`` names the page's menu entry)."""

    __slots__ = ("admin",)

    def __init__(self, request: AnyRequest, core: Core, admin: Admin, session: sessions.PortalSession) -> None:
        super().__init__(request, core, session)
        self.admin = admin

    @property
    def tenant_id(self) -> str:
        return self.admin.tenant.info.id

    def context(self) -> dict[str, Any]:
        return {"admin": self.admin, "tenant_id": self.tenant_id, "csrf": self.session.csrf, "nav": "",
                "flash": self.session.pop_flash()}


_CTX_KEY = "portal_ctx"
AnyConnection = ASGIConnection[Any, Any, Any, Any]


async def _signed_in(connection: AnyConnection) -> Ctx:
    """The session's admin, re-checked against the live key cache (a revoked or
    expired admin key ends the session at once) and charged like an API call."""
    cached = connection.state.get(_CTX_KEY)
    if isinstance(cached, Ctx):
        return cached
    request: Request[Any, Any, Any] = connection  # type: ignore[assignment]  # the portal is HTTP only
    session = await sessions.load(request)
    if session is None:
        raise SignedOut()
    if session.kind != "admin":  # a consumer's session never opens an admin page
        raise Forbidden("These pages are for the tenant's administrators. Your keys are at /portal/my/keys.")
    admin = await admin_from_session(request, session.tenant, session.kid)
    if admin is None:
        await sessions.destroy(request, session.id)
        raise SignedOut(ended=True)
    ctx = connection.state[_CTX_KEY] = Ctx(request, core_of(request), admin, session)
    return ctx


def signed_in_with(scope: str) -> Guard:
    """A guard: signed in, with an admin key that carries ``scope``."""

    async def guard(connection: AnyConnection, _: BaseRouteHandler) -> None:
        (await _signed_in(connection)).admin.require(scope)

    return guard


class Posted(keypages.Posted):
    __slots__ = ()
    ctx: Ctx


DEPENDENCIES = keypages.dependencies(_signed_in, Posted)
CAN_READ = [signed_in_with(READ)]
CAN_WRITE = [signed_in_with(WRITE)]


# --- sign in / out ------------------------------------------------------------

def _login_page(request: AnyRequest, status: int = 200, *, error: str | None = None, notice: str | None = None,
                headers: dict[str, str] | None = None) -> Response[Any]:
    token = sessions.login_token_of(request) or sessions.new_login_token(request)
    resp = page("login.html", status, headers, title="Sign in", login_csrf=token, error=error, notice=notice)
    resp.set_cookie(sessions.login_cookie(request, token))
    return resp


@get("/")
async def portal_home(request: AnyRequest) -> Response[Any]:
    session = await sessions.load(request)
    return Redirect("/portal/my/keys" if session and session.kind == "consumer" else "/portal/keys", status_code=303)


@get("/login")
async def login_form(request: AnyRequest) -> Response[Any]:
    session = await sessions.load(request)
    if session is not None and session.kind == "admin":
        return Redirect("/portal/keys", status_code=303)
    notice = None
    if request.query_params.get("ended"):
        notice = "Your session ended. Sign in again."
    elif request.query_params.get("out"):
        notice = "You are signed out."
    return _login_page(request, notice=notice)


def _verify_admin_key(core: Core, token: str) -> tuple[str, str] | None:
    """(tenant id, kid) of a live admin key with the keys:read scope, or None."""
    found = verify_admin_key(core, token)
    if found is None or READ not in found[1].scopes:
        return None
    return found[0].info.id, found[1].kid


@post("/login", status_code=200)
async def login(request: AnyRequest, lifecycle: NamedDependency[KeyLifecycle]) -> Response[Any]:
    core = core_of(request)
    form = await request.form()
    if not sessions.check_login_csrf(request, form.get("csrf_token")):
        raise CsrfFailed()
    raw = form.get("admin_key")
    token = raw.strip() if isinstance(raw, str) else ""
    # verified first: a valid key signs in even from an address over its budget
    found = _verify_admin_key(core, token) if 0 < len(token) <= 8192 else None
    if found is None:
        try:
            await count_auth_failure(request)  # the same budget as the API's
        except RateLimited as exc:
            return _login_page(request, 429, error="Too many failed sign-ins. Wait a minute and try again.",
                               headers={"Retry-After": str(exc.retry_after)})
        return _login_page(request, 401, error=SIGN_IN_FAILED)
    tenant_id, kid = found
    session = await sessions.create(request, tenant_id, kid)
    await lifecycle.record(tenant_id, Actor(kid, client_addr(request)), "portal.sign_in")
    resp: Response[Any] = Redirect("/portal/keys", status_code=303)
    resp.headers["Cache-Control"] = "no-store"
    resp.set_cookie(sessions.session_cookie(request, session))
    resp.set_cookie(sessions.login_cookie(request, None))
    return resp


@post("/logout", status_code=303)
async def logout(request: AnyRequest) -> Response[Any]:
    session = await sessions.load(request)
    if session is not None:
        form = await request.form()
        if not session.check_csrf(form.get("csrf_token")):
            raise CsrfFailed()
        await sessions.destroy(request, session.id)
    resp: Response[Any] = Redirect("/portal/login?out=1", status_code=303)
    resp.set_cookie(sessions.session_cookie(request, None))
    return resp


# --- keys ---------------------------------------------------------------------

@get("/keys", guards=CAN_READ, dependencies=DEPENDENCIES)
async def keys_list(request: AnyRequest, ctx: NamedDependency[Ctx],
                    queries: NamedDependency[KeyQueries]) -> Response[Any]:
    state = request.query_params.get("state") or "all"
    if state not in {s for s, _ in STATE_CHOICES}:
        state = "all"
    q = (request.query_params.get("q") or "").strip()
    cursor = request.query_params.get("cursor") or None  # checked by the query service, as for the API
    page = await queries.list_keys(ctx.tenant_id, state=state, limit=PAGE_SIZE, cursor=cursor, search=q or None)
    rows, next_cursor = page.items, page.next_cursor
    now = ctx.core.clock()
    items = [ctx.key(r, now) for r in rows]
    grace_value, grace_unit = grace_default(ctx.core.settings.default_grace_seconds)
    return await ctx.page(
        "keys.html", nav="keys", title="API keys", items=items, state=state, q=q, cursor=cursor,
        next_cursor=next_cursor, states=STATE_CHOICES, grace_value=grace_value, grace_unit=grace_unit,
        grace_units=GRACE_UNITS, can_write="keys:write" in ctx.admin.scopes,
        gateway_cache_seconds=ctx.core.settings.gateway_cache_seconds,
        max_grace_seconds=ctx.core.settings.max_grace_seconds, now=now,
    )


@get("/keys/{key_id:str}", guards=CAN_READ, dependencies=DEPENDENCIES)
async def key_detail(ctx: NamedDependency[Ctx], queries: NamedDependency[KeyQueries], key_id: KeyId) -> Response[Any]:
    usage = ctx.core.usage_queries
    assert usage is not None  # always built
    return await ctx.key_page("key.html", await queries.get(ctx.tenant_id, key_id), usage, nav="keys",
                              can_write="keys:write" in ctx.admin.scopes)


def _new_form_context(ctx: Ctx, values: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"title": "Create an API key", "values": values or {"expiry": "never", "expiry_days": "90"},
            "form_nonce": ctx.session.new_form_nonce(), "prefix": ctx.admin.tenant.info.key_prefix}


@get("/keys/new", guards=CAN_WRITE, dependencies=DEPENDENCIES)
async def key_new_form(ctx: NamedDependency[Ctx]) -> Response[Any]:
    return await ctx.page("key_new.html", nav="keys", **_new_form_context(ctx))


def parse_scopes(raw: str) -> list[str]:
    out: list[str] = []
    for s in re.split(r"[\s,]+", raw or ""):
        if s and s not in out:
            out.append(s)
    return out


def _mint_values(form: Any) -> dict[str, str]:
    values = {k: form.get(k) for k in ("name", "subject", "scopes", "expiry", "expiry_days")}
    return {k: v if isinstance(v, str) else "" for k, v in values.items()}


def _parse_mint_form(values: dict[str, str]) -> KeySpec:
    """The form as a KeySpec: the limits are the schema's (authserver.schemas);
    only what the form itself adds (a name is required, expiry in days) is here."""
    name = values["name"].strip()
    if not name:
        raise InvalidInput("Give the key a name, so you can find it again.")
    expires_in = parse_expiry(values)
    return key_spec({"name": name, "subject": values["subject"].strip() or None,
                     "scopes": parse_scopes(values["scopes"]), "expires_in": expires_in})


@post("/keys", status_code=201, guards=CAN_WRITE, dependencies=DEPENDENCIES)
async def key_create(posted: NamedDependency[Posted], lifecycle: NamedDependency[KeyLifecycle]) -> Response[Any]:
    ctx, form = posted.ctx, posted.form
    if again := await ctx.sent_twice(form, nav="keys"):
        return again
    core = ctx.core
    values = _mint_values(form)
    try:
        spec = _parse_mint_form(values)
        with core.metrics.mint_seconds.labels(ctx.admin.tenant.info.algorithm).time():
            row, minted = await lifecycle.mint(ctx.tenant_id, spec, ctx.admin.actor)
    except InvalidInput as exc:
        return await ctx.page("key_new.html", 422, nav="keys", error=exc.detail, **_new_form_context(ctx, values))
    return await ctx.shown_once("Key created", minted.key, row, nav="keys")


@get("/keys/{key_id:str}/roll", guards=CAN_WRITE, dependencies=DEPENDENCIES)
async def key_roll_form(ctx: NamedDependency[Ctx], queries: NamedDependency[KeyQueries],
                        key_id: KeyId) -> Response[Any]:
    return await ctx.roll_form("key_roll.html", await queries.get(ctx.tenant_id, key_id), nav="keys")


@post("/keys/{key_id:str}/roll", status_code=201, guards=CAN_WRITE, dependencies=DEPENDENCIES)
async def key_roll(posted: NamedDependency[Posted], lifecycle: NamedDependency[KeyLifecycle],
                   key_id: KeyId) -> Response[Any]:
    ctx = posted.ctx
    grace = ctx.grace(posted.form)
    new, minted, old = await lifecycle.roll(ctx.tenant_id, key_id, ctx.admin.actor, grace_seconds=grace)
    return await ctx.shown_once("Key rolled", minted.key, new, old, grace_seconds=grace, nav="keys")


@get("/keys/{key_id:str}/revoke", guards=CAN_WRITE, dependencies=DEPENDENCIES)
async def key_revoke_form(ctx: NamedDependency[Ctx], queries: NamedDependency[KeyQueries],
                          key_id: KeyId) -> Response[Any]:
    return await ctx.revoke_form("key_revoke.html", await queries.get(ctx.tenant_id, key_id), nav="keys")


@post("/keys/{key_id:str}/revoke", status_code=303, guards=CAN_WRITE, dependencies=DEPENDENCIES)
async def key_revoke(posted: NamedDependency[Posted], lifecycle: NamedDependency[KeyLifecycle],
                     key_id: KeyId) -> Response[Any]:
    ctx = posted.ctx
    row = await lifecycle.revoke(ctx.tenant_id, key_id, ctx.admin.actor)
    return await ctx.revoked(row, "/portal/keys", after=": it left the JWKS")


# --- audit --------------------------------------------------------------------

def _details(d: dict[str, Any] | None) -> list[tuple[str, str]]:
    out = []
    for k, v in (d or {}).items():
        if isinstance(v, list):
            v = " ".join(str(x) for x in v) or "—"
        out.append((str(k), "—" if v is None else str(v)))
    return out


AUDIT_ACTIONS = ["key.mint", "key.roll", "key.revoke", "key.update", "admin_key.mint", "admin_key.roll",
                 "admin_key.revoke", "portal.sign_in", "portal.link", "tenant.create", "tenant.shards"]


@get("/audit", guards=CAN_READ, dependencies=DEPENDENCIES)
async def audit(request: AnyRequest, ctx: NamedDependency[Ctx], queries: NamedDependency[KeyQueries]) -> Response[Any]:
    """Paged like the key list (an opaque ``cursor``); ``key`` and ``action`` filter,
    checked by the query service like the API's."""
    params = request.query_params
    key, action = (params.get("key") or "").strip(), (params.get("action") or "").strip()
    cursor = params.get("cursor") or None
    found = await queries.audit(ctx.tenant_id, limit=AUDIT_PAGE_SIZE, cursor=cursor, key=key or None,
                                action=action or None)
    names = await queries.key_names(ctx.tenant_id, {key, *(k for e in found.items for k in (e.target, e.actor) if k)})
    rows = [{**audit_view(e), "detail_items": _details(e.details), "target_name": names.get(e.target or ""),
             "actor_name": names.get(e.actor)} for e in found.items]
    return await ctx.page(
        "audit.html", nav="audit", title="Audit log", events=rows, cursor=cursor, next_cursor=found.next_cursor,
        self_kid=ctx.admin.kid, key=key, action=action, actions=AUDIT_ACTIONS,
        key_name=names.get(key),
    )


HANDLERS = [portal_home, login_form, login, logout, keys_list, key_detail, key_new_form, key_create, key_roll_form,
            key_roll, key_revoke_form, key_revoke, audit]
