"""Admin keys over the management API: /v1/admin-keys.

Listing needs ``keys:read``; minting, rolling and revoking ``admin-keys:write``,
and a caller never grants a scope it lacks. Revoking the caller's own key is
allowed (it stops working at once); revoking the tenant's last active admin
key that can manage admin keys is refused with 409 ``last_admin_key``: the
CLI (``authserver admin-keys``), which works on the database, is the way out.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from ..auth import ADMIN_WRITE, READ, Admin, provide_admin, requires
from ..db.models import ApiKey
from ..schemas import AdminKeySpec, RollRequest
from ..services import KeyLifecycle, KeyQueries
from ..services.adminkeys import admin_key_spec, check_grant
from . import docs
from .deps import core_of, json_body
from .management import KeyId, ListCursor, ListLimit, ListState
from .views import admin_key_view

__all__ = ["AdminKeysController"]

AnyRequest = Request[Any, Any, Any]
_SHOWN_ONCE = "Store this admin key now: it is shown only once and cannot be recovered."


def _created(row: ApiKey, key: str, now: float, **extra: Any) -> Response[Any]:
    """201 with the full admin key: the only answer that ever carries it."""
    body = admin_key_view(row, now) | {"key": key, "warning": _SHOWN_ONCE} | extra
    return Response(body, status_code=201,
                    headers={"Cache-Control": "no-store", "Location": f"/v1/admin-keys/{row.id}"})


class AdminKeysController(Controller):
    path = "/v1/admin-keys"
    tags = ["admin keys"]
    dependencies = {"admin": provide_admin}

    @get("/", guards=[requires(READ)], **docs.op("list_admin_keys"))
    async def list_admin_keys(
        self, request: AnyRequest, admin: NamedDependency[Admin], queries: NamedDependency[KeyQueries],
        key_state: ListState = "all", limit: ListLimit = 50, cursor: ListCursor = None,
    ) -> dict[str, Any]:
        """The tenant's admin keys, newest first; ``cursor`` from ``next_cursor`` as in /v1/keys."""
        page = await queries.list_keys(admin.tenant_id, state=key_state, limit=limit,
                                       cursor=cursor, kind="admin")
        now = core_of(request).clock()
        return {"data": [admin_key_view(r, now) for r in page.items], "next_cursor": page.next_cursor}

    @post("/", status_code=201, guards=[json_body(AdminKeySpec), requires(ADMIN_WRITE)],
          **docs.op("mint_admin_key"))
    async def mint_admin_key(self, request: AnyRequest, admin: NamedDependency[Admin],
                             lifecycle: NamedDependency[KeyLifecycle], data: JSONBody[AdminKeySpec]) -> Response[Any]:
        """Mint an admin key: ``scopes`` default to the caller's and may not exceed them;
        ``expires_in`` seconds (default: never). The key is in this answer only."""
        spec = admin_key_spec(request.state.body, admin.scopes)
        row, minted = await lifecycle.mint(admin.tenant_id, spec, admin.actor, kind="admin")
        return _created(row, minted.key, core_of(request).clock())

    @get("/{key_id:str}", guards=[requires(READ)], **docs.op("get_admin_key"))
    async def get_admin_key(self, request: AnyRequest, admin: NamedDependency[Admin],
                            queries: NamedDependency[KeyQueries], key_id: KeyId) -> dict[str, Any]:
        """One admin key (never the key string)."""
        row = await queries.get(admin.tenant_id, key_id, kind="admin")
        return admin_key_view(row, core_of(request).clock())

    @post("/{key_id:str}/roll", status_code=201,
          guards=[json_body(RollRequest | None, RollRequest()), requires(ADMIN_WRITE)], **docs.op("roll_admin_key"))
    async def roll_admin_key(self, request: AnyRequest, admin: NamedDependency[Admin],
                             queries: NamedDependency[KeyQueries], lifecycle: NamedDependency[KeyLifecycle],
                             key_id: KeyId, data: JSONBody[RollRequest | None] = None) -> Response[Any]:
        """A new admin key with the same name and scopes; the old one works for ``grace_seconds``."""
        body: RollRequest = request.state.body
        old = await queries.get(admin.tenant_id, key_id, kind="admin")
        check_grant(old.scopes, admin.scopes)  # a roll must not hand out more than the caller has
        new, minted, old = await lifecycle.roll(admin.tenant_id, key_id, admin.actor, kind="admin",
                                                grace_seconds=body.grace_seconds, expires_in=body.expires_in)
        now = core_of(request).clock()
        return _created(new, minted.key, now, previous=admin_key_view(old, now))

    @delete("/{key_id:str}", status_code=200, guards=[requires(ADMIN_WRITE)], **docs.op("revoke_admin_key"))
    async def revoke_admin_key(self, request: AnyRequest, admin: NamedDependency[Admin],
                               lifecycle: NamedDependency[KeyLifecycle], key_id: KeyId) -> dict[str, Any]:
        """Revoke now (idempotent). 409 ``last_admin_key`` if no other active admin key
        with ``admin-keys:write`` would remain."""
        row = await lifecycle.revoke(admin.tenant_id, key_id, admin.actor, kind="admin", keep_last_admin=True)
        return admin_key_view(row, core_of(request).clock())
