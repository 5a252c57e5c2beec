"""Request helpers shared by controllers: the Core, the job services, JSON
bodies, RateLimit headers."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard, Message, Scope

from ..auth import client_addr, core_of
from ..errors import ServiceError, UnsupportedMediaType
from ..services import Introspector, KeyLifecycle, KeyQueries
from ..services.consumers import ConsumerPortal

__all__ = ["SERVICES", "add_ratelimit_headers", "client_addr", "core_of", "json_body"]


# --- the job services, injected by name (``lifecycle: NamedDependency[KeyLifecycle]``) ---

def _lifecycle(request: Request[Any, Any, Any]) -> KeyLifecycle:
    return core_of(request).lifecycle


def _queries(request: Request[Any, Any, Any]) -> KeyQueries:
    return core_of(request).queries


def _introspector(request: Request[Any, Any, Any]) -> Introspector:
    return core_of(request).introspector


def _consumers(request: Request[Any, Any, Any]) -> ConsumerPortal:
    return core_of(request).consumers


# registered once, app-wide, by create_app: the services Core.build made
SERVICES = {
    "lifecycle": Provide(_lifecycle, sync_to_thread=False),
    "queries": Provide(_queries, sync_to_thread=False),
    "introspector": Provide(_introspector, sync_to_thread=False),
    "consumers": Provide(_consumers, sync_to_thread=False),
}


async def _require_json(request: Request[Any, Any, Any], *, optional: bool = False) -> None:
    """A JSON endpoint takes JSON: a form or text/plain body is refused (415)
    rather than parsed as JSON anyway. ``optional``: an empty body is fine."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    if optional and not await request.body():
        return
    raise UnsupportedMediaType("send the request body as application/json")


async def _strict(request: Request[Any, Any, Any], typ: Any, default: Any = None) -> Any:
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


def json_body(typ: Any, default: Any = None) -> Guard:
    """First guard of a JSON endpoint, before authentication and before Litestar
    parses the body: 415 for another media type, then the strict decode (kept in
    request.state.body for the handler). ``default``: the body may be empty."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        request: Request[Any, Any, Any] = connection  # type: ignore[assignment]  # guards of HTTP routes get the Request
        await _require_json(request, optional=default is not None)
        request.state.body = await _strict(request, typ, default)

    return guard


async def add_ratelimit_headers(message: Message, scope: Scope) -> None:
    """before_send hook: RateLimit-* headers on every rate-limited answer."""
    if message["type"] != "http.response.start":
        return
    decision = scope.get("state", {}).get("ratelimit")
    if decision is not None:
        present = {k.lower() for k, _ in message.get("headers", [])}
        extra = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()
                 if k.lower().encode() not in present]
        message["headers"] = list(message.get("headers", [])) + extra
