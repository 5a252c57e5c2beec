"""RFC 9457 problem details for every error; never a stack trace.

Database and driver errors are logged here and answered with a generic 503:
their text can name tables, hosts or values and is not for clients.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .errors import RateLimited, ServiceError

AnyRequest = Request[Any, Any, Any]

log = logging.getLogger("authserver.errors")
PROBLEM = "application/problem+json"
_TITLES = {
    400: "Bad request", 401: "Missing or invalid credential", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 413: "Request body too large", 415: "Unsupported media type",
    422: "Invalid input", 429: "Too many requests", 503: "A backing service is unavailable",
}


def problem(status: int, code: str, detail: str | None = None, headers: dict[str, str] | None = None,
            **extra: Any) -> Response[Any]:
    body = {
        "type": f"https://authserver.dev/problems/{code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM, headers=headers)


def on_service_error(request: AnyRequest, exc: ServiceError) -> Response[Any]:
    headers = {**exc.headers, "Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    if exc.status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="authserver"'}
    return problem(exc.status, exc.code, exc.detail, headers, **exc.extra)


def on_validation_error(request: AnyRequest, exc: ValidationException) -> Response[Any]:
    errors = []
    for e in exc.extra or []:
        if isinstance(e, dict):
            errors.append({k: str(v) for k, v in e.items() if k in ("key", "message", "source")})
    return problem(400, "invalid_request", "The request does not match the schema", errors=errors)


def on_http_error(request: AnyRequest, exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if status >= 500:
        log.error("http error %s on %s %s", status, request.method, request.url.path)
        return problem(status, "server_error", "The server could not handle the request")
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}.get(
        status, "bad_request"
    )
    detail = exc.detail if isinstance(exc.detail, str) and status != 401 else None
    return problem(status, code, detail, headers=dict(exc.headers or {}) or None)


def on_database_error(request: AnyRequest, exc: Exception) -> Response[Any]:
    log.warning("database unavailable during %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return problem(503, "unavailable", "The database is unavailable; nothing was changed. Retry later.",
                   headers={"Retry-After": "2"})


def on_unexpected(request: AnyRequest, exc: Exception) -> Response[Any]:
    if is_connection_error(exc):
        return on_database_error(request, exc)
    if isinstance(exc, RecursionError):
        # the JSON decoder gives up on absurdly nested bodies this way
        log.warning("refused a too deeply nested request on %s %s", request.method, request.url.path)
        return problem(400, "bad_request", "The request body is nested too deeply")
    if isinstance(exc, UnicodeDecodeError):
        # a body or form that is not UTF-8 (decoders raise this, not their own error)
        log.warning("refused a request that is not UTF-8 on %s %s", request.method, request.url.path)
        return problem(400, "bad_request", "The request is not valid UTF-8")
    if _is_data_error(exc):
        # a value the database cannot store or compare (NUL in text, an integer
        # beyond 64 bits): the request's fault, and nothing was written
        log.warning("database refused a value on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return problem(422, "invalid_input", "A value in the request is out of range or cannot be stored")
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "server_error", "The server could not handle the request")


def _is_data_error(exc: BaseException) -> bool:
    """SQLSTATE class 22 (data exception) from PostgreSQL, or a value the
    SQLite driver cannot bind; only when the database layer raised it."""
    if isinstance(exc, OverflowError) and "SQLite" in str(exc):
        return True  # the sqlite3 driver raises this unwrapped
    if not isinstance(exc, StatementError):  # DBAPIError is one too
        return False
    cur: BaseException | None = exc
    for _ in range(8):
        if cur is None:
            break
        sqlstate = getattr(cur, "sqlstate", None)
        if isinstance(cur, OverflowError) or (isinstance(sqlstate, str) and sqlstate.startswith("22")):
            return True
        nxt = cur.orig if isinstance(cur, StatementError) else None
        cur = nxt if nxt is not None and nxt is not cur else (cur.__cause__ or cur.__context__)
    return False


def is_connection_error(error: BaseException) -> bool:
    """True if ``error`` (or what caused it) means a backing service is unreachable."""
    seen = 0
    exc: BaseException | None = error
    while exc is not None and seen < 8:
        if isinstance(exc, (OperationalError, PoolTimeout, ConnectionError, OSError, TimeoutError)):
            return True
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        name = type(exc).__name__
        if name in ("CannotConnectNowError", "ConnectionDoesNotExistError", "InterfaceError",
                    "ConnectionFailureError", "AdminShutdownError"):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ServiceError: on_service_error,
    ValidationException: on_validation_error,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}
