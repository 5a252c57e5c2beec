"""Management API: /v1/keys. Thin: parse, authenticate, call KeyService, shape JSON."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

import keys
import keys.hazmat

from ..errors import InvalidInput, ServiceError, UnsupportedMediaType
from ..services import KeySpec
from ..services.apikeys import audit_view, decode_cursor, key_view
from .deps import admin_for, core_of

# Text that ends up in the database, in JWT claims and (sub) in gateway headers:
# no control characters. NUL is refused by PostgreSQL; CR/LF have no place in a header.
_TEXT = r"^[^\x00-\x1f\x7f]+$"
# key ids are RFC 7638 thumbprints: base64url
_KEY_ID = r"^[A-Za-z0-9_-]{1,64}$"
_KEY_ID_RE = re.compile(_KEY_ID)
_MAX_METADATA_DEPTH = 16
_INT64_MAX = 2**63 - 1

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_TEXT)]
_Subject = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=_TEXT)]
_KeyId = Annotated[str, PathParameter(min_length=1, max_length=64, pattern=_KEY_ID)]
# a closed set: it also labels the mint latency metric, so no client string may reach it
_Algorithm = Literal[keys.supported_algorithms()]  # type: ignore[valid-type]
_Scope = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$")]
_Seconds = Annotated[int, msgspec.Meta(ge=1, le=10 * 365 * 86400)]


class RateLimit(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=10**9)]
    window_seconds: Annotated[int, msgspec.Meta(ge=1, le=2678400)]


class MintRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: _Name | None = None
    subject: _Subject | None = None
    scopes: Annotated[list[_Scope], msgspec.Meta(max_length=64)] = []
    expires_in: _Seconds | None = None
    algorithm: _Algorithm | None = None
    metadata: dict[str, Any] = {}
    rate_limits: Annotated[list[RateLimit], msgspec.Meta(max_length=8)] | None = None


class RollRequest(msgspec.Struct, forbid_unknown_fields=True):
    grace_seconds: Annotated[int, msgspec.Meta(ge=0)] | None = None
    expires_in: _Seconds | None = None


def _check_metadata(value: Any, depth: int = 0) -> None:
    """Free-form metadata, but storable everywhere: bounded nesting, no NUL
    (PostgreSQL's JSONB refuses \\u0000, SQLite would keep it)."""
    if depth > _MAX_METADATA_DEPTH:
        raise InvalidInput(f"metadata is nested deeper than {_MAX_METADATA_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_metadata(k, depth + 1)
            _check_metadata(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_metadata(v, depth + 1)
    elif isinstance(value, str) and "\x00" in value:
        raise InvalidInput("metadata strings cannot contain NUL characters")


async def _require_json(request: Request, *, optional: bool = False) -> None:
    """A JSON endpoint takes JSON: a form or text/plain body is refused (415)
    rather than parsed as JSON anyway. ``optional``: an empty body is fine."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    if optional and not await request.body():
        return
    raise UnsupportedMediaType("send the request body as application/json")


async def _strict(request: Request, typ: Any, default: Any = None) -> Any:
    """Decode the body again, strictly: Litestar converts leniently, so "60"
    would pass for an integer and 1.0 for a whole number. Types are the contract."""
    raw = await request.body()
    if not raw.strip() and default is not None:
        return default
    try:
        value = msgspec.json.decode(raw, type=typ, strict=True)
    except msgspec.ValidationError as exc:
        raise ServiceError(f"the request does not match the schema: {exc}") from None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        raise ServiceError("the request body is not valid JSON") from None
    return default if value is None else value


def _json_body(typ: Any, default: Any = None):
    """before_request hook of a JSON endpoint, run before Litestar parses the
    body: 415 for another media type, then the strict decode (kept in
    request.state.body for the handler). ``default``: the body may be empty."""

    async def hook(request: Request) -> None:
        await _require_json(request, optional=default is not None)
        request.state.body = await _strict(request, typ, default)
        return None

    return hook


def _checked_cursor(cursor: str | None) -> str | None:
    """Only cursors this server could have issued reach the database."""
    if not cursor:
        return None
    created, kid = decode_cursor(cursor)  # InvalidInput if it does not even decode
    if not (0 <= created <= _INT64_MAX) or not _KEY_ID_RE.match(kid):
        raise InvalidInput("cursor is not one this server issued")
    return cursor


class KeysController(Controller):
    path = "/v1/keys"
    tags = ["keys"]

    @post("/", status_code=201, before_request=_json_body(MintRequest))
    async def mint(self, request: Request, data: JSONBody[MintRequest]) -> Response:
        """Mint an API key. The full key is in this response and nowhere else, ever."""
        admin = await admin_for(request)
        admin.require("keys:write")
        data = request.state.body  # the strictly decoded twin of ``data``
        _check_metadata(data.metadata)
        core = core_of(request)
        spec = KeySpec(
            name=data.name, subject=data.subject, scopes=list(data.scopes), expires_in=data.expires_in,
            algorithm=data.algorithm, metadata=data.metadata,
            rate_limits=[msgspec.structs.asdict(r) for r in data.rate_limits] if data.rate_limits else None,
        )
        with core.metrics.mint_seconds.labels(data.algorithm or admin.tenant.info.algorithm).time():
            row, minted = await core.service.mint(admin.tenant.info.id, spec, admin.actor)
        body = key_view(row, core.clock(), core.settings)
        body["key"] = minted.key
        body["warning"] = "Store this key now: it is shown only once and cannot be recovered."
        return Response(body, status_code=201, headers={"Cache-Control": "no-store", "Location": f"/v1/keys/{row.id}"})

    @get("/")
    async def list_keys(
        self,
        request: Request,
        key_state: Annotated[str, QueryParameter(name="state")] = "all",
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=512, pattern=r"^[A-Za-z0-9_=-]*$")] = None,
        subject: Annotated[str | None, QueryParameter(min_length=1, max_length=256, pattern=_TEXT)] = None,
        search: Annotated[str | None, QueryParameter(name="q", max_length=200, pattern=_TEXT)] = None,
    ) -> dict:
        """List keys, newest first. ``state``: active, rolling, live, expired, revoked, all;
        ``q``: a substring of the name or subject, or a key id prefix."""
        admin = await admin_for(request)
        admin.require("keys:read")
        core = core_of(request)
        page = await core.service.list(admin.tenant.info.id, state=key_state, limit=limit, cursor=_checked_cursor(cursor),
                                       subject=subject,
                                       search=search)
        now = core.clock()
        return {"data": [key_view(r, now, core.settings) for r in page.items], "next_cursor": page.next_cursor}

    @get("/{key_id:str}")
    async def get_key(self, request: Request, key_id: _KeyId) -> dict:
        """One key's description (never the key string)."""
        admin = await admin_for(request)
        admin.require("keys:read")
        core = core_of(request)
        row = await core.service.get(admin.tenant.info.id, key_id)
        return key_view(row, core.clock(), core.settings)

    @post("/{key_id:str}/roll", status_code=201, before_request=_json_body(RollRequest | None, RollRequest()))
    async def roll(self, request: Request, key_id: _KeyId, data: JSONBody[RollRequest | None] = None) -> Response:
        """Replace a key: a new key now, the old one stays valid for the grace period."""
        admin = await admin_for(request)
        admin.require("keys:write")
        data = request.state.body
        core = core_of(request)
        new, minted, old = await core.service.roll(
            admin.tenant.info.id, key_id, admin.actor, grace_seconds=data.grace_seconds,
            expires_in=data.expires_in,
        )
        now = core.clock()
        body = key_view(new, now, core.settings)
        body["key"] = minted.key
        body["previous"] = key_view(old, now, core.settings)
        return Response(body, status_code=201, headers={"Cache-Control": "no-store", "Location": f"/v1/keys/{new.id}"})

    @delete("/{key_id:str}", status_code=200)
    async def revoke(self, request: Request, key_id: _KeyId) -> dict:
        """Revoke now: the key leaves the JWKS at once."""
        admin = await admin_for(request)
        admin.require("keys:write")
        core = core_of(request)
        row = await core.service.revoke(admin.tenant.info.id, key_id, admin.actor)
        return key_view(row, core.clock(), core.settings)


@get("/v1/audit", tags=["audit"])
async def audit_log(
    request: Request, limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    before_id: Annotated[int | None, QueryParameter(ge=0, le=_INT64_MAX)] = None,
) -> dict:
    """The tenant's audit trail, newest first."""
    admin = await admin_for(request)
    admin.require("keys:read")
    core = core_of(request)
    events = await core.service.audit(admin.tenant.info.id, limit=limit, before_id=before_id)
    return {"data": [audit_view(e) for e in events], "next_before_id": events[-1].id if len(events) == limit else None}


@post("/oauth/introspect", tags=["oauth"], status_code=200)
async def introspect(request: Request) -> Response:
    """RFC 7662 token introspection, authenticated by a tenant admin key.

    Form field ``token``. Answers ``active`` plus the claims, and a ``status``
    (VALID, EXPIRED, REVOKED, INVALID) for the operator.
    """
    admin = await admin_for(request, "introspect")
    core = core_of(request)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        try:
            body = msgspec.json.decode(await request.body())
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            raise ServiceError("the request body is not valid JSON") from None
        token = body.get("token") if isinstance(body, dict) else None
    else:
        form = await request.form()
        token = form.get("token")
    if not isinstance(token, str) or not token:
        raise InvalidInput("the 'token' parameter is required")
    if _malformed_kid(token):
        # none of our keys has such a kid: INVALID without asking the database
        # (a NUL in it would even make PostgreSQL fail)
        answer: dict[str, Any] = {"active": False, "status": "INVALID"}
    else:
        answer = await core.service.introspect(admin.tenant.info.id, token)
    return Response(answer, headers={"Cache-Control": "no-store"})


def _malformed_kid(token: str) -> bool:
    try:
        kid = keys.hazmat.unverified_kid(token)
    except keys.KeyCoreError:
        return False  # the service judges unparseable tokens itself
    return not (isinstance(kid, str) and _KEY_ID_RE.match(kid))


ROUTES = [KeysController, audit_log, introspect]
