"""Webhooks over the management API: /v1/webhooks.

Reading endpoints and the delivery log needs ``keys:read``; adding, removing,
replaying and the tenant's settings ``keys:write``. The signing secret is in
the creation answer only.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

from ..auth import READ, WRITE, Admin, provide_admin, requires
from ..schemas import WEBHOOK_ID_PATTERN, WebhookSettings, WebhookSpec
from ..services.webhooks import WebhookService
from . import docs
from .deps import core_of, json_body
from .views import delivery_view, webhook_view

__all__ = ["WebhooksController"]

AnyRequest = Request[Any, Any, Any]
WebhookId = Annotated[str, PathParameter(min_length=1, max_length=48, pattern=WEBHOOK_ID_PATTERN)]
Limit = Annotated[int, QueryParameter(ge=1, le=500)]
# the ``next_cursor`` of the page before: the last delivery id it listed
Cursor = Annotated[str | None, QueryParameter(max_length=48, pattern=r"^dlv_[0-9a-f]{1,40}$")]
_SHOWN_ONCE = "Store this signing secret now: it is shown only once and cannot be recovered."


def _service(request: AnyRequest) -> WebhookService:
    return core_of(request).webhooks


def _page(rows: list[tuple[Any, str]], limit: int) -> dict[str, Any]:
    return {"data": [delivery_view(d, t) for d, t in rows],
            "next_cursor": rows[-1][0].id if len(rows) == limit else None}


class WebhooksController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]
    dependencies = {"admin": provide_admin}

    @post("/", status_code=201, guards=[json_body(WebhookSpec), requires(WRITE)], **docs.op("create_webhook"))
    async def create_webhook(self, request: AnyRequest, admin: NamedDependency[Admin],
                             data: JSONBody[WebhookSpec]) -> Response[Any]:
        """Register an endpoint for key events (``event_types`` default: all). Answers its
        ``secret`` (``whsec_...``) once: verify each delivery's ``webhook-signature`` with it."""
        body: WebhookSpec = request.state.body
        row, secret = await _service(request).create(admin.tenant_id, body.url, body.event_types, body.description,
                                                     admin.actor)
        return Response(webhook_view(row) | {"secret": secret, "warning": _SHOWN_ONCE}, status_code=201,
                        headers={"Cache-Control": "no-store", "Location": f"/v1/webhooks/{row.id}"})

    @get("/", guards=[requires(READ)], **docs.op("list_webhooks"))
    async def list_webhooks(self, request: AnyRequest, admin: NamedDependency[Admin]) -> dict[str, Any]:
        """The tenant's endpoints, oldest first (never their secrets)."""
        return {"data": [webhook_view(r) for r in await _service(request).endpoints(admin.tenant_id)]}

    @get("/settings", guards=[requires(READ)], **docs.op("webhook_settings"))
    async def get_settings(self, request: AnyRequest, admin: NamedDependency[Admin]) -> dict[str, Any]:
        """``expiring_days``: key.expiring fires this many days before a key expires."""
        return {"expiring_days": await _service(request).expiring_days(admin.tenant_id)}

    @put("/settings", guards=[json_body(WebhookSettings), requires(WRITE)], **docs.op("set_webhook_settings"))
    async def put_settings(self, request: AnyRequest, admin: NamedDependency[Admin],
                           data: JSONBody[WebhookSettings]) -> dict[str, Any]:
        """Set ``expiring_days`` (1-365) for the tenant."""
        body: WebhookSettings = request.state.body
        days = await _service(request).set_expiring_days(admin.tenant_id, body.expiring_days, admin.actor)
        return {"expiring_days": days}

    @get("/deliveries", guards=[requires(READ)], **docs.op("list_deliveries"))
    async def all_deliveries(self, request: AnyRequest, admin: NamedDependency[Admin],
                             limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
        """The tenant's newest deliveries, to every endpoint; ``cursor`` from ``next_cursor``."""
        return _page(await _service(request).deliveries(admin.tenant_id, limit=limit, before=cursor), limit)

    @post("/deliveries/{delivery_id:str}/replay", status_code=201, guards=[requires(WRITE)],
          **docs.op("replay_delivery"))
    async def replay(self, request: AnyRequest, admin: NamedDependency[Admin],
                     delivery_id: WebhookId) -> dict[str, Any]:
        """Send a delivery's event again: a new delivery with the same ``webhook_id``
        (the receiver's duplicate check sees it as the same event)."""
        row, event_type = await _service(request).replay(admin.tenant_id, delivery_id, admin.actor)
        return delivery_view(row, event_type)

    @get("/{endpoint_id:str}", guards=[requires(READ)], **docs.op("get_webhook"))
    async def get_webhook(self, request: AnyRequest, admin: NamedDependency[Admin],
                          endpoint_id: WebhookId) -> dict[str, Any]:
        """One endpoint (never its secret)."""
        return webhook_view(await _service(request).get(admin.tenant_id, endpoint_id))

    @delete("/{endpoint_id:str}", status_code=200, guards=[requires(WRITE)], **docs.op("delete_webhook"))
    async def delete_webhook(self, request: AnyRequest, admin: NamedDependency[Admin],
                             endpoint_id: WebhookId) -> dict[str, Any]:
        """Remove an endpoint: nothing more is sent to it (pending deliveries are cancelled); its log stays."""
        return webhook_view(await _service(request).delete(admin.tenant_id, endpoint_id, admin.actor))

    @get("/{endpoint_id:str}/deliveries", guards=[requires(READ)], **docs.op("list_endpoint_deliveries"))
    async def deliveries(self, request: AnyRequest, admin: NamedDependency[Admin], endpoint_id: WebhookId,
                         limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
        """An endpoint's newest deliveries: status, attempts, next attempt, last status code and
        error; ``cursor`` from ``next_cursor``."""
        return _page(await _service(request).deliveries(admin.tenant_id, endpoint_id, limit=limit, before=cursor),
                     limit)
