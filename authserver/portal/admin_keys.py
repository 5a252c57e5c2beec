"""The portal's admin-keys page: the tenant's admin keys, mint (shown once) and
revoke, over the same services and rules as /v1/admin-keys.

    GET  /portal/admin-keys               list (keys:read); the mint form (admin-keys:write)
    POST /portal/admin-keys               mint: the key is shown once on the answer page
    GET  /portal/admin-keys/{id}/revoke   revoke confirmation
    POST /portal/admin-keys/{id}/revoke   revoke now (409 page for the tenant's last manager)

One template (admin_keys.html) in three modes: list, minted, confirm.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import PathParameter

from ..api.views import admin_key_view
from ..auth import ADMIN_WRITE, READ
from ..errors import InvalidInput
from ..schemas import ADMIN_SCOPES, KEY_ID_PATTERN, KeySpec
from ..services import KeyLifecycle, KeyQueries
from ..services.adminkeys import admin_key_spec
from .keypages import SECRET_PAGE_HEADERS, display, parse_expiry
from .views import DEPENDENCIES, PAGE_SIZE, Ctx, Posted, signed_in_with

__all__ = ["HANDLERS"]

CAN_READ = [signed_in_with(READ)]
CAN_MANAGE = [signed_in_with(ADMIN_WRITE)]
_PATH = "/portal/admin-keys"
ADMIN_KEY_SHOWN_ONCE = ("This form was already sent and its admin key was shown once. If you did not copy it, "
                        "revoke it on the admin keys page and mint a new one.")
KeyId = Annotated[str, PathParameter(min_length=1, max_length=64, pattern=KEY_ID_PATTERN)]


def _form_values(form: Any) -> dict[str, Any]:
    values = {k: form.get(k) for k in ("name", "expiry", "expiry_days")}
    out: dict[str, Any] = {k: v if isinstance(v, str) else "" for k, v in values.items()}
    out["scopes"] = [s for s in form.getall("scopes", []) if isinstance(s, str)]
    return out


def _spec(values: dict[str, Any], granted: frozenset[str]) -> KeySpec:
    expires_in = parse_expiry(values)
    name = values["name"].strip()
    if not name:
        raise InvalidInput("Give the admin key a name, so you can find it again.")
    # the same rules as the API: admin scopes only, never one the signed-in key lacks
    return admin_key_spec({"name": name, "scopes": values["scopes"], "expires_in": expires_in}, granted)


async def _list_page(ctx: Ctx, queries: KeyQueries, status: int = 200, *, cursor: str | None = None,
                     headers: dict[str, str] | None = None, **context: Any) -> Response[Any]:
    page = await queries.list_keys(ctx.tenant_id, limit=PAGE_SIZE, cursor=cursor or None, kind="admin")
    now = ctx.core.clock()
    items = [display(admin_key_view(r, now), now) for r in page.items]
    granted = [s for s in ADMIN_SCOPES if s in ctx.admin.scopes]
    context.setdefault("values", {"name": "", "scopes": granted, "expiry": "days", "expiry_days": "90"})
    return await ctx.page(
        "admin_keys.html", status, nav="admin-keys", headers=headers, title="Admin keys", items=items,
        cursor=cursor, next_cursor=page.next_cursor, can_manage=ADMIN_WRITE in ctx.admin.scopes,
        grantable=granted, form_nonce=ctx.session.new_form_nonce(), self_kid=ctx.admin.kid, **context,
    )


@get("/admin-keys", guards=CAN_READ, dependencies=DEPENDENCIES)
async def admin_keys_list(request: Request[Any, Any, Any], ctx: NamedDependency[Ctx],
                          queries: NamedDependency[KeyQueries]) -> Response[Any]:
    cursor = request.query_params.get("cursor") or None
    return await _list_page(ctx, queries, cursor=cursor)


@post("/admin-keys", status_code=201, guards=CAN_MANAGE, dependencies=DEPENDENCIES)
async def admin_key_create(posted: NamedDependency[Posted], queries: NamedDependency[KeyQueries],
                           lifecycle: NamedDependency[KeyLifecycle]) -> Response[Any]:
    ctx, form = posted.ctx, posted.form
    if again := await ctx.sent_twice(form, ADMIN_KEY_SHOWN_ONCE, nav="admin-keys"):
        return again
    values = _form_values(form)
    try:
        spec = _spec(values, ctx.admin.scopes)
    except InvalidInput as exc:
        return await _list_page(ctx, queries, 422, error=exc.detail, values=values)
    row, minted = await lifecycle.mint(ctx.tenant_id, spec, ctx.admin.actor, kind="admin")
    now = ctx.core.clock()
    return await _list_page(ctx, queries, 201, headers=SECRET_PAGE_HEADERS, key=minted.key,
                            minted=display(admin_key_view(row, now), now))


@get("/admin-keys/{key_id:str}/revoke", guards=CAN_MANAGE, dependencies=DEPENDENCIES)
async def admin_key_revoke_form(ctx: NamedDependency[Ctx], queries: NamedDependency[KeyQueries],
                                key_id: KeyId) -> Response[Any]:
    row = await queries.get(ctx.tenant_id, key_id, kind="admin")
    now = ctx.core.clock()
    return await ctx.page("admin_keys.html", nav="admin-keys", title="Revoke an admin key",
                          confirm=display(admin_key_view(row, now), now), self_kid=ctx.admin.kid)


@post("/admin-keys/{key_id:str}/revoke", status_code=303, guards=CAN_MANAGE, dependencies=DEPENDENCIES)
async def admin_key_revoke(posted: NamedDependency[Posted], lifecycle: NamedDependency[KeyLifecycle],
                           key_id: KeyId) -> Response[Any]:
    ctx = posted.ctx
    row = await lifecycle.revoke(ctx.tenant_id, key_id, ctx.admin.actor, kind="admin", keep_last_admin=True)
    # revoking the key this session signed in with ends the session: the next page says so
    return await ctx.revoked(row, _PATH, what="Admin key")


HANDLERS = [admin_keys_list, admin_key_create, admin_key_revoke_form, admin_key_revoke]
