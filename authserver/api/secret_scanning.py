"""POST /v1/secret-scanning/github: GitHub's secret-scanning partner endpoint.

Authenticated by GitHub's signature over the raw body (services/leaks.py), not
by an admin key. The body is read here with its own size cap, since a report
can carry many matches; nothing of it is logged.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post

from ..errors import PayloadTooLarge
from ..settings import MAX_SECRET_SCANNING_BODY
from . import docs
from .deps import client_addr, core_of

__all__ = ["ROUTES", "github_secret_scanning"]


async def _capped_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"a report is at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"a report is at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@post("/v1/secret-scanning/github", status_code=200, tags=["secret scanning"],
      request_max_body_size=MAX_SECRET_SCANNING_BODY, **docs.op("secret_scanning"))
async def github_secret_scanning(request: Request[Any, Any, Any]) -> Response[Any]:
    """GitHub's secret-scanning partner endpoint: ``[{token, type, url, source}]``
    signed by GitHub (``Github-Public-Key-Identifier``, ``Github-Public-Key-Signature``:
    ECDSA P-256 SHA-256 over the raw body). Our keys in it are revoked, or only
    reported, per the tenant's leak policy. Answers ``[{token_hash, token_type, label}]``
    (``true_positive`` for a key we publish, else ``false_positive``); 401 if the
    signature does not verify."""
    core = core_of(request)
    assert core.leaks is not None  # Core.build always makes it
    body = await _capped_body(request, core.settings.secret_scanning_max_body_bytes)
    answer = await core.leaks.report(
        body, request.headers.get("github-public-key-identifier"),
        request.headers.get("github-public-key-signature"), client_addr(request),
    )
    return Response(answer, headers={"Cache-Control": "no-store"})


ROUTES = [github_secret_scanning]
