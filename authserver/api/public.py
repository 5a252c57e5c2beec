"""Public routes: JWKS and discovery documents. No credential, cache-friendly.

JWKS answers are precomputed bytes (and their gzip twin) with a strong ETag;
``If-None-Match`` gets a 304. max-age never runs past the next scheduled
removal, so a well-behaved cache cannot hold a key past its expiry. The
JWKS GETs are answered by a plain ASGI fast path in front of Litestar
(``with_jwks_fast_path``); the routes below give the same answer (one
``jwks_answer``) and keep the docs and the error cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from litestar import Request, Response, get
from litestar.enums import ScopeType
from litestar.params import PathParameter
from litestar.types import ASGIApp, Receive, Scope, Send

from ..errors import NotFound
from ..metrics_access import token_ok
from ..schemas import ALGORITHM_NAMES
from . import docs
from .deps import core_of

if TYPE_CHECKING:
    from ..core import Core
    from ..keycache import ServedJWKS, TenantKeys

AnyRequest = Request[Any, Any, Any]

JSON = "application/json"
_TenantId = Annotated[str, PathParameter()]


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    bare = etag.strip('"')
    for tag in header.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag.strip('"') == bare:
            return True
    return False


def accepts_gzip(header: str | None) -> bool:
    """RFC 9110 Accept-Encoding: gzip (or x-gzip, or *) with a q-value above 0.
    An explicit gzip entry wins over *; "gzip;q=0" means never gzip."""
    if not header:
        return False
    explicit: float | None = None
    star: float | None = None
    for item in header.split(","):
        coding, *params = (p.strip() for p in item.split(";"))
        coding = coding.lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if coding == "*":
            star = q if star is None else max(star, q)
        else:
            explicit = q if explicit is None else max(explicit, q)
    chosen = explicit if explicit is not None else star
    return chosen is not None and chosen > 0


@dataclass(frozen=True, slots=True)
class JWKSAnswer:
    """A JWKS answer, decided once for both ways in (fast path and Litestar)."""

    status: int
    headers: dict[str, str]
    chunks: list[bytes]  # the body as written: one chunk per group of segments (empty for 304)


def jwks_answer(core: Core, tenant_id: str, shard: int | None, if_none_match: str | None,
                accept_encoding: str | None) -> JWKSAnswer:
    """The tenant's (or shard's) JWKS, 304 on a matching ETag, gzip if accepted;
    raises NotFound."""
    tk = core.cache.get(tenant_id)
    if tk is None:
        raise NotFound("no such tenant")
    if not tk.has_shard(shard):
        raise NotFound("no such shard")
    served = tk.jwks(shard)
    not_modified = etag_matches(if_none_match, served.etag)
    core.metrics.jwks_fetch(tenant_id, shard, not_modified)
    return build_answer(served, jwks_max_age(core, tk), not_modified,
                        not not_modified and accepts_gzip(accept_encoding))


def jwks_max_age(core: Core, tk: TenantKeys) -> int:
    """Cache-Control max-age of a tenant's JWKS now: never past its next scheduled removal."""
    max_age = core.settings.jwks_max_age_seconds
    nxt = tk.next_removal()
    if nxt is not None:
        max_age = max(0, min(max_age, math.floor(nxt - core.clock())))
    return max_age


def build_answer(served: ServedJWKS, max_age: int, not_modified: bool, gzipped: bool) -> JWKSAnswer:
    """The answer for one rendering (``served``), once the request is judged."""
    headers = {
        "etag": served.etag,
        "cache-control": f"public, max-age={max_age}",
        "vary": "Accept-Encoding",
        "x-content-type-options": "nosniff",
    }
    if not_modified:
        return JWKSAnswer(304, headers, [])
    if gzipped:
        headers["content-encoding"] = "gzip"
    return JWKSAnswer(200, headers, served.chunks(gzipped))


def _jwks_response(request: AnyRequest, tenant_id: str, shard: int | None = None) -> Response[Any]:
    answer = jwks_answer(core_of(request), tenant_id, shard, request.headers.get("if-none-match"),
                         request.headers.get("accept-encoding"))
    if answer.status == 304:
        return Response(b"", status_code=304, headers=answer.headers)
    return Response(b"".join(answer.chunks), media_type=JSON, headers=answer.headers)


# --- the fast path: the JWKS GETs answered in plain ASGI, before Litestar -----

_DEFAULT_TEMPLATE = "/.well-known/jwks.json"
_TENANT_TEMPLATE = "/t/{tenant_id}/.well-known/jwks.json"
_SHARD_TEMPLATE = "/t/{tenant_id}/shards/{shard}/jwks.json"


def match_jwks(path: str, default_tenant: str) -> tuple[str, int | None, str] | None:
    """(tenant, shard, route template) of a JWKS path, or None for any other path
    (or one Litestar should judge, e.g. a shard that is not a plain number)."""
    if path == _DEFAULT_TEMPLATE:
        return default_tenant, None, _DEFAULT_TEMPLATE
    if not path.startswith("/t/"):
        return None
    parts = path.split("/")  # "", "t", tenant, ...
    if len(parts) == 5 and parts[3] == ".well-known" and parts[4] == "jwks.json" and parts[2]:
        return parts[2], None, _TENANT_TEMPLATE
    if (len(parts) == 6 and parts[3] == "shards" and parts[5] == "jwks.json" and parts[2]
            and parts[4].isascii() and parts[4].isdigit()):
        return parts[2], int(parts[4]), _SHARD_TEMPLATE
    return None


def jwks_fast_answer(core: Core, path: str, if_none_match: str | None,
                     accept_encoding: str | None) -> tuple[str, JWKSAnswer] | None:
    """(route template, answer) of a GET or HEAD on a JWKS path of a known
    tenant; None for anything else (Litestar answers it: unknown tenants and
    shards with a problem, odd paths, other routes)."""
    matched = match_jwks(path, core.settings.default_tenant)
    if matched is None or matched[0] not in core.cache.tenants:
        return None
    tenant_id, shard, template = matched
    try:
        return template, jwks_answer(core, tenant_id, shard, if_none_match, accept_encoding)
    except NotFound:
        return None


def with_jwks_fast_path(app: ASGIApp, core: Core) -> ASGIApp:
    """Answer JWKS GET and HEAD requests without routing, handler or response
    objects (the same answer as the Litestar routes, which keep the docs and
    every other case); measured ~1.7x the Litestar handler for a precomputed
    body. Sets ``path_template`` so the HTTP metrics count it under the
    route's template. (`authserver serve` answers them one step earlier, in
    the HTTP protocol: authserver.serving.)"""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] in ("GET", "HEAD"):
            if_none_match = accept_encoding = None
            for name, value in scope["headers"]:
                if name == b"if-none-match":
                    if_none_match = value.decode("latin-1")
                elif name == b"accept-encoding":
                    accept_encoding = value.decode("latin-1")
            found = jwks_fast_answer(core, scope["path"], if_none_match, accept_encoding)
            if found is not None:
                scope["path_template"] = found[0]
                await _send_answer(found[1], scope["method"] == "HEAD", send)
                return
        await app(scope, receive, send)

    return handler


def response_head(answer: JWKSAnswer) -> list[tuple[bytes, bytes]]:
    """The answer's header fields, as written (Content-Length counts the body a GET would get)."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()]
    if answer.status == 200:
        headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(sum(map(len, answer.chunks))).encode()))
    return headers


async def _send_answer(answer: JWKSAnswer, head: bool, send: Send) -> None:
    await send({"type": "http.response.start", "status": answer.status, "headers": response_head(answer)})
    if head or not answer.chunks:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    # one message per ~256 KiB: a send per segment would cost more than the copy
    batch: list[bytes] = []
    size = 0
    for chunk in answer.chunks:
        batch.append(chunk)
        size += len(chunk)
        if size >= _SEND_BATCH:
            await send({"type": "http.response.body", "body": b"".join(batch), "more_body": True})
            batch, size = [], 0
    await send({"type": "http.response.body", "body": b"".join(batch), "more_body": False})


_SEND_BATCH = 256 * 1024


def _discovery(request: AnyRequest, tenant_id: str) -> dict[str, Any]:
    core = core_of(request)
    tk = core.cache.get(tenant_id)
    if tk is None:
        raise NotFound("no such tenant")
    base = core.settings.base_url
    issuer = tk.info.issuer
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "response_types_supported": ["token"],
        "grant_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        # any key of the tenant may use any of these (the algorithm is per key)
        "id_token_signing_alg_values_supported": list(ALGORITHM_NAMES),
        "subject_types_supported": ["public"],
        "scopes_supported": [],
        "service_documentation": f"{base}/schema",
        "audience": tk.info.audience,
    }


@get("/t/{tenant_id:str}/.well-known/jwks.json", include_in_schema=True, tags=["public"], sync_to_thread=False,
     **docs.op("jwks"))
def tenant_jwks(request: AnyRequest, tenant_id: _TenantId) -> Response[Any]:
    """The tenant's JSON Web Key Set: one public key per live API key."""
    return _jwks_response(request, tenant_id)


@get("/t/{tenant_id:str}/shards/{shard:int}/jwks.json", tags=["public"], sync_to_thread=False, **docs.op("jwks"))
def shard_jwks(request: AnyRequest, tenant_id: _TenantId, shard: Annotated[int, PathParameter()]) -> Response[Any]:
    """One shard of a sharded tenant's keys (keys whose prefix ends in s{shard}_)."""
    return _jwks_response(request, tenant_id, shard)


@get("/.well-known/jwks.json", tags=["public"], sync_to_thread=False, **docs.op("default_jwks"))
def default_jwks(request: AnyRequest) -> Response[Any]:
    """The default tenant's JWKS."""
    return _jwks_response(request, core_of(request).settings.default_tenant)


@get(
    [
        "/t/{tenant_id:str}/.well-known/openid-configuration",
        "/t/{tenant_id:str}/.well-known/oauth-authorization-server",
        # RFC 8414 section 3.1: the well-known suffix goes between host and path,
        # which is where strict RFC 8414 clients look for issuer {base}/t/{tenant}
        "/.well-known/oauth-authorization-server/t/{tenant_id:str}",
        "/.well-known/openid-configuration/t/{tenant_id:str}",
    ],
    tags=["public"], sync_to_thread=False, **docs.op("discovery"),
)
def tenant_discovery(request: AnyRequest, tenant_id: _TenantId) -> dict[str, Any]:
    """OpenID discovery / RFC 8414 metadata for one tenant (path appended or inserted)."""
    return _discovery(request, tenant_id)


@get(["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"], tags=["public"],
     sync_to_thread=False, **docs.op("default_discovery"))
def default_discovery(request: AnyRequest) -> dict[str, Any]:
    """Discovery metadata of the default tenant."""
    return _discovery(request, core_of(request).settings.default_tenant)


@get("/healthz", tags=["ops"], sync_to_thread=False, **docs.op("healthz"))
def healthz(request: AnyRequest) -> dict[str, Any]:
    """Liveness plus whether the database answered the last reread."""
    core = core_of(request)
    return {"status": "ok", "database": "ok" if core.db_ok else "unreachable", "tenants": len(core.cache.tenants)}


@get("/metrics", tags=["ops"], sync_to_thread=False, **docs.op("metrics"))
def metrics(request: AnyRequest) -> Response[Any]:
    """Prometheus metrics, with the bearer AUTHSERVER_METRICS_TOKEN only (else 404: not public)."""
    core = core_of(request)
    if not token_ok(core.settings.metrics_token, request.headers.get("authorization")):
        raise NotFound("no such route")
    return Response(core.metrics.render(), media_type="text/plain; version=0.0.4",
                    headers={"Cache-Control": "no-store"})


ROUTES = [tenant_jwks, shard_jwks, default_jwks, tenant_discovery, default_discovery, healthz, metrics]
