"""The API docs page at /schema: Swagger UI served from the package
(authserver/docs_ui, a pinned vendored build), never from a CDN, under a CSP
that allows same-origin scripts only. The page works offline."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated, Any

from litestar import Request, Response, Router, get
from litestar.datastructures import ResponseHeader
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.params import PathParameter

from ..errors import NotFound

__all__ = ["CSP", "SWAGGER_UI_VERSION", "DocsPage"]

SWAGGER_UI_VERSION = "5.35.0"
ASSETS_DIR = Path(__file__).resolve().parent.parent / "docs_ui"
# Swagger UI sets inline styles through the DOM (allowed by style-src 'self'
# for CSSOM writes, but its markup also carries style attributes): styles may
# be inline, scripts never. Try-it-out calls go to this origin only.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# what /schema/assets/{name} serves: a closed list, read once
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",  # Litestar adds the charset
    "swagger-ui.css": "text/css",
    "docs.js": "text/javascript",
}
_HEADERS = [
    ResponseHeader(name="Content-Security-Policy", value=CSP),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="no-referrer"),
]


class DocsPage(OpenAPIRenderPlugin):
    def __init__(self, path: str = "/swagger") -> None:
        super().__init__(path=path)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        spec_url = html.escape(self.get_openapi_json_route(request), quote=True)
        assets = html.escape(request.app.route_reverse("docs_asset", asset="x").rsplit("/", 1)[0], quote=True)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(openapi_schema.get("info", {}).get("title", "API"))} API</title>'
            f'<link rel="icon" href="data:,"><link rel="stylesheet" href="{assets}/swagger-ui.css">'
            f'</head><body><div id="swagger-ui" data-spec-url="{spec_url}"></div>'
            f'<script src="{assets}/swagger-ui-bundle.js"></script><script src="{assets}/docs.js"></script>'
            "</body></html>\n"
        ).encode()

    def receive_router(self, router: Router) -> None:
        # every /schema answer (page, document, assets) carries the CSP
        router.response_headers = [*(router.response_headers or ()), *_HEADERS]
        router.register(docs_asset)


@get("/assets/{asset:str}", name="docs_asset", include_in_schema=False, sync_to_thread=False)
def docs_asset(asset: Annotated[str, PathParameter(max_length=64)]) -> Response[bytes]:
    """A vendored Swagger UI file; anything not on the list is a 404 problem."""
    media_type = _ASSETS.get(asset)
    if media_type is None:
        raise NotFound("no such asset")
    return Response(_read(asset), media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})


_CACHE: dict[str, bytes] = {}


def _read(name: str) -> bytes:
    if name not in _CACHE:
        _CACHE[name] = (ASSETS_DIR / name).read_bytes()
    return _CACHE[name]
