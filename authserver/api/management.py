"""Management API: /v1/keys, /v1/audit, /oauth/introspect.

Thin: guards decode the body and authenticate (authserver.auth), the handler
makes one call on the job service it is injected with (``SERVICES`` in
authserver.api.deps) and shapes the JSON.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

import keys

from ..auth import READ, WRITE, Admin, provide_admin, provide_introspection_admin, requires
from ..core import Core
from ..db.models import ApiKey
from ..durations import parse_duration
from ..errors import InvalidInput, ServiceError
from ..keycache import claimed_kid
from ..schemas import (
    AUDIT_ACTION_PATTERN,
    KEY_ID_PATTERN,
    SEARCH_MAX_LENGTH,
    SUBJECT_MAX_LENGTH,
    TEXT_PATTERN,
    KeyPatch,
    KeySpec,
    RollRequest,
)
from ..services import Introspector, KeyLifecycle, KeyQueries
from ..services.queries import STATES
from ..stagetimes import stages_of
from . import docs
from .deps import core_of, json_body
from .views import audit_view, key_view

__all__ = [
    "ROUTES", "KeyId", "KeysController", "ListCursor", "ListLimit", "ListState", "audit_log",
    "introspect",
]

_KEY_ID_RE = re.compile(KEY_ID_PATTERN)
_INT64_MAX = 2**63 - 1
KeyId = Annotated[str, PathParameter(min_length=1, max_length=64, pattern=KEY_ID_PATTERN)]
# the list parameters of /v1/keys and /v1/admin-keys (authserver.api.admin_keys)
ListState = Annotated[str, QueryParameter(name="state")]
ListLimit = Annotated[int, QueryParameter(ge=1, le=500)]
# opaque: the ``next_cursor`` of the page before (decoded and checked by the query service)
ListCursor = Annotated[str | None, QueryParameter(max_length=512, pattern=r"^[A-Za-z0-9_=-]*$")]
AnyRequest = Request[Any, Any, Any]


def _duration(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _with_key(core: Core, row: ApiKey, minted: keys.MintedKey, **extra: Any) -> Response[Any]:
    """201 with the full key: the only answer that ever carries it."""
    body = key_view(row, core.clock(), core.settings) | {"key": minted.key} | extra
    return Response(body, status_code=201, headers={"Cache-Control": "no-store", "Location": f"/v1/keys/{row.id}"})


class KeysController(Controller):
    path = "/v1/keys"
    tags = ["keys"]
    dependencies = {"admin": provide_admin}

    @post("/", status_code=201, guards=[json_body(KeySpec), requires(WRITE)], **docs.op("mint"))
    async def mint(self, request: AnyRequest, admin: NamedDependency[Admin], lifecycle: NamedDependency[KeyLifecycle],
                   data: JSONBody[KeySpec]) -> Response[Any]:
        """Mint an API key. The full key is in this response and nowhere else, ever."""
        spec: KeySpec = request.state.body  # the strictly decoded twin of ``data``
        core = core_of(request)
        stages = stages_of(request.state)
        if stages is not None:
            stages.mark("auth")  # routing, the body and the admin key
        with core.metrics.mint_seconds.labels(spec.algorithm or admin.tenant.info.algorithm).time():
            row, minted = await lifecycle.mint(admin.tenant_id, spec, admin.actor, stages=stages)
        return _with_key(core, row, minted,
                         warning="Store this key now: it is shown only once and cannot be recovered.")

    @get("/", guards=[requires(READ)], **docs.op("list_keys"))
    async def list_keys(
        self,
        request: AnyRequest,
        admin: NamedDependency[Admin],
        queries: NamedDependency[KeyQueries],
        key_state: Annotated[str, QueryParameter(name="state", schema_extra={"enum": list(STATES)})] = "all",
        limit: ListLimit = 50,
        cursor: ListCursor = None,
        subject: Annotated[str | None, QueryParameter(min_length=1, max_length=SUBJECT_MAX_LENGTH,
                                                      pattern=TEXT_PATTERN)] = None,
        search: Annotated[str | None, QueryParameter(name="q", max_length=SEARCH_MAX_LENGTH,
                                                     pattern=TEXT_PATTERN)] = None,
        unused_for: Annotated[str | None, QueryParameter(max_length=12, pattern=r"^[0-9]+[smhdw]?$")] = None,
    ) -> dict[str, Any]:
        """List keys, newest first. ``state``: active, rolling, live, expired, revoked, all;
        ``q``: a substring of the name or subject, or a key id prefix; ``unused_for``:
        e.g. ``30d``, keys with no call reported by a gateway for that long."""
        core = core_of(request)
        page = await queries.list_keys(admin.tenant_id, state=key_state, limit=limit,
                                       cursor=cursor, subject=subject, search=search,
                                       unused_for=_duration(unused_for))
        now = core.clock()
        return {"data": [key_view(r, now, core.settings) for r in page.items], "next_cursor": page.next_cursor}

    @get("/{key_id:str}", guards=[requires(READ)], **docs.op("get_key"))
    async def get_key(self, request: AnyRequest, admin: NamedDependency[Admin], queries: NamedDependency[KeyQueries],
                      key_id: KeyId) -> dict[str, Any]:
        """One key's description (never the key string), with the calls gateways reported."""
        core = core_of(request)
        view = key_view(await queries.get(admin.tenant_id, key_id), core.clock(), core.settings)
        assert core.usage_queries is not None  # always built
        return view | {"usage_totals": await core.usage_queries.totals(admin.tenant_id, key_id)}

    @get("/{key_id:str}/usage", guards=[requires(READ)], **docs.op("usage"))
    async def usage(
        self, request: AnyRequest, admin: NamedDependency[Admin], queries: NamedDependency[KeyQueries],
        key_id: KeyId,
        start: Annotated[int | None, QueryParameter(name="from", ge=0, le=_INT64_MAX)] = None,
        end: Annotated[int | None, QueryParameter(name="to", ge=0, le=_INT64_MAX)] = None,
        granularity: Annotated[str, QueryParameter(pattern="^(hour|day)$")] = "hour",
    ) -> dict[str, Any]:
        """Calls gateways reported for this key per hour or day (UNIX seconds
        ``from``/``to``; default the last 24 hours), by status class."""
        core = core_of(request)
        await queries.get(admin.tenant_id, key_id)  # 404 for another tenant's key
        now = int(core.clock())
        to = end if end is not None else now + 1
        frm = start if start is not None else to - 86400
        assert core.usage_queries is not None
        data = await core.usage_queries.series(admin.tenant_id, key_id, frm, to, granularity)
        return {"from": frm, "to": to, "granularity": granularity, "data": data}

    @post("/{key_id:str}/roll", status_code=201,
          guards=[json_body(RollRequest | None, RollRequest()), requires(WRITE)], **docs.op("roll"))
    async def roll(self, request: AnyRequest, admin: NamedDependency[Admin], lifecycle: NamedDependency[KeyLifecycle],
                   key_id: KeyId, data: JSONBody[RollRequest | None] = None) -> Response[Any]:
        """Replace a key: a new key now, the old one stays valid for the grace period."""
        body: RollRequest = request.state.body
        core = core_of(request)
        new, minted, old = await lifecycle.roll(admin.tenant_id, key_id, admin.actor,
                                                grace_seconds=body.grace_seconds, expires_in=body.expires_in)
        return _with_key(core, new, minted, previous=key_view(old, core.clock(), core.settings))

    @patch("/{key_id:str}", guards=[json_body(KeyPatch), requires(WRITE)], **docs.op("update"))
    async def update(self, request: AnyRequest, admin: NamedDependency[Admin],
                     lifecycle: NamedDependency[KeyLifecycle], key_id: KeyId,
                     data: JSONBody[KeyPatch]) -> dict[str, Any]:
        """Change a live key's name, metadata or rate limits without re-issuing it
        (gateways enforce new limits at the next request)."""
        core = core_of(request)
        row = await lifecycle.update(admin.tenant_id, key_id, request.state.body, admin.actor)
        return key_view(row, core.clock(), core.settings)

    @delete("/{key_id:str}", status_code=200, guards=[requires(WRITE)], **docs.op("revoke"))
    async def revoke(self, request: AnyRequest, admin: NamedDependency[Admin], lifecycle: NamedDependency[KeyLifecycle],
                     key_id: KeyId) -> dict[str, Any]:
        """Revoke now: the key leaves the JWKS at once."""
        core = core_of(request)
        return key_view(await lifecycle.revoke(admin.tenant_id, key_id, admin.actor), core.clock(), core.settings)


@get("/v1/audit", tags=["audit"], guards=[requires(READ)], dependencies={"admin": provide_admin},
     **docs.op("audit_log"))
async def audit_log(
    admin: NamedDependency[Admin], queries: NamedDependency[KeyQueries],
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    cursor: ListCursor = None,
    key: Annotated[str | None, QueryParameter(max_length=64, pattern=KEY_ID_PATTERN)] = None,
    action: Annotated[str | None, QueryParameter(max_length=32, pattern=AUDIT_ACTION_PATTERN)] = None,
    before_id: Annotated[int | None, QueryParameter(ge=0, le=_INT64_MAX, description="deprecated: use cursor")] = None,
) -> dict[str, Any]:
    """The tenant's audit trail, newest first; ``key``: only events about that key id,
    ``action``: only that action (e.g. key.revoke). Paged like /v1/keys: pass ``next_cursor``
    as ``cursor``. (``before_id``/``next_before_id``: the older spelling, still accepted.)"""
    page = await queries.audit(admin.tenant_id, limit=limit, cursor=cursor, before_id=before_id, key=key,
                               action=action)
    more = page.next_cursor is not None
    return {"data": [audit_view(e) for e in page.items], "next_cursor": page.next_cursor,
            "next_before_id": page.items[-1].id if more else None}


async def _token_param(request: AnyRequest) -> object:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = msgspec.json.decode(await request.body())
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            raise ServiceError("the request body is not valid JSON") from None
        return body.get("token") if isinstance(body, dict) else None
    return (await request.form()).get("token")


@post("/oauth/introspect", tags=["oauth"], status_code=200, dependencies={"admin": provide_introspection_admin},
      **docs.op("introspect"))
async def introspect(request: AnyRequest, admin: NamedDependency[Admin],
                     introspector: NamedDependency[Introspector]) -> Response[Any]:
    """RFC 7662 token introspection, authenticated by a tenant admin key.

    Form field ``token``. Answers ``active`` plus the claims, and a ``status``
    (VALID, EXPIRED, REVOKED, INVALID) for the operator.
    """
    token = await _token_param(request)
    if not isinstance(token, str) or not token:
        raise InvalidInput("the 'token' parameter is required")
    if _malformed_kid(token):
        # none of our keys has such a kid: INVALID without asking the database
        # (a NUL in it would even make PostgreSQL fail)
        answer: dict[str, Any] = {"active": False, "status": "INVALID"}
    else:
        answer = await introspector.introspect(admin.tenant_id, token)
    core_of(request).metrics.introspections.labels(answer["status"]).inc()
    return Response(answer, headers={"Cache-Control": "no-store"})


def _malformed_kid(token: str) -> bool:
    try:
        kid = claimed_kid(token)
    except keys.KeyCoreError:
        return False  # the service judges unparseable tokens itself
    return not _KEY_ID_RE.match(kid)


ROUTES = [KeysController, audit_log, introspect]
