"""The portal's webhooks page: the tenant's endpoints and their recent
deliveries, with replay; add (signing secret shown once) and remove. The
same service and rules as /v1/webhooks.

    GET  /portal/webhooks                              endpoints, recent deliveries (keys:read)
    POST /portal/webhooks                              add: the secret is shown once (keys:write)
    POST /portal/webhooks/{id}/remove                  remove (keys:write)
    POST /portal/webhooks/deliveries/{id}/replay       replay, same webhook-id (keys:write)
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.params import PathParameter
from litestar.response import Redirect

from ..api.views import delivery_view, webhook_view
from ..auth import READ, WRITE
from ..errors import ServiceError
from ..schemas import WEBHOOK_ID_PATTERN
from ..services.outbox import EVENT_TYPES
from .keypages import SECRET_PAGE_HEADERS
from .views import DEPENDENCIES, Ctx, Posted, signed_in_with

__all__ = ["HANDLERS"]

CAN_READ = [signed_in_with(READ)]
CAN_WRITE = [signed_in_with(WRITE)]
_PATH = "/portal/webhooks"
RECENT = 50
WebhookId = Annotated[str, PathParameter(min_length=1, max_length=48, pattern=WEBHOOK_ID_PATTERN)]


async def _page(ctx: Ctx, status: int = 200, *, headers: dict[str, str] | None = None,
                **context: Any) -> Response[Any]:
    service = ctx.core.webhooks
    endpoints = [webhook_view(r) for r in await service.endpoints(ctx.tenant_id)]
    names = {e["id"]: e["url"] for e in endpoints}
    deliveries = [delivery_view(d, t) | {"url": names.get(d.endpoint_id)}
                  for d, t in await service.deliveries(ctx.tenant_id, limit=RECENT)]
    context.setdefault("values", {"url": "", "description": "", "event_types": list(EVENT_TYPES)})
    return await ctx.page(
        "webhooks.html", status, nav="webhooks", headers=headers, title="Webhooks", endpoints=endpoints,
        deliveries=deliveries, event_types=EVENT_TYPES, enabled=service.enabled,
        can_write=WRITE in ctx.admin.scopes, expiring_days=await service.expiring_days(ctx.tenant_id), **context,
    )


@get("/webhooks", guards=CAN_READ, dependencies=DEPENDENCIES)
async def webhooks_page(ctx: NamedDependency[Ctx]) -> Response[Any]:
    return await _page(ctx)


@post("/webhooks", status_code=201, guards=CAN_WRITE, dependencies=DEPENDENCIES)
async def webhook_add(posted: NamedDependency[Posted]) -> Response[Any]:
    ctx, form = posted.ctx, posted.form
    url = form.get("url")
    description = form.get("description")
    chosen = [t for t in form.getall("event_types", []) if isinstance(t, str)]
    url = url.strip() if isinstance(url, str) else ""
    description = description.strip()[:200] if isinstance(description, str) else ""
    values = {"url": url, "event_types": chosen, "description": description}
    if not chosen:
        return await _page(ctx, 422, error="Choose at least one event type.", values=values)
    try:
        row, secret = await ctx.core.webhooks.create(ctx.tenant_id, url, chosen, description or None,
                                                     ctx.admin.actor)
    except ServiceError as exc:  # a bad URL (422) or no webhook key (503): said on the page
        return await _page(ctx, exc.status, error=exc.detail, values=values)
    return await _page(ctx, 201, headers=SECRET_PAGE_HEADERS, secret=secret, added=webhook_view(row))


@post("/webhooks/{endpoint_id:str}/remove", status_code=303, guards=CAN_WRITE, dependencies=DEPENDENCIES)
async def webhook_remove(posted: NamedDependency[Posted], endpoint_id: WebhookId) -> Response[Any]:
    ctx = posted.ctx
    row = await ctx.core.webhooks.delete(ctx.tenant_id, endpoint_id, ctx.admin.actor)
    ctx.session.add_flash("ok", f"Webhook {row.url} is removed; nothing more is sent to it.")
    await ctx.save()
    return Redirect(_PATH, status_code=303)


@post("/webhooks/deliveries/{delivery_id:str}/replay", status_code=303, guards=CAN_WRITE,
      dependencies=DEPENDENCIES)
async def delivery_replay(posted: NamedDependency[Posted], delivery_id: WebhookId) -> Response[Any]:
    ctx = posted.ctx
    row, event_type = await ctx.core.webhooks.replay(ctx.tenant_id, delivery_id, ctx.admin.actor)
    ctx.session.add_flash("ok", f"{event_type} queued again (webhook-id {row.event_id}).")
    await ctx.save()
    return Redirect(_PATH, status_code=303)


HANDLERS = [webhooks_page, webhook_add, webhook_remove, delivery_replay]
