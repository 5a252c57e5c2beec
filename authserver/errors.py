"""Service errors. Each maps to one RFC 9457 problem type and status.

    ServiceError (400)
    ├── InvalidInput (422)      a field has a bad value
    ├── Unauthorized (401)      bad or missing credential; never says which part
    ├── Forbidden (403)         credential fine, scope or tenant wrong
    ├── NotFound (404)
    ├── Conflict (409)          e.g. rolling a revoked key
    │   ├── LastAdminKey (409)  revoking the admin key the tenant cannot do without
    │   └── QuotaExceeded (409) the tenant is at its cap on live keys
    ├── PayloadTooLarge (413)
    ├── UnsupportedMediaType (415)  e.g. a body that is not JSON where JSON is required
    ├── RateLimited (429)       carries retry_after seconds
    ├── Unavailable (503)       a backing service (database) is down
    └── WebhooksUnavailable (503)  no AUTHSERVER_WEBHOOK_KEY to seal webhook secrets with
"""

from __future__ import annotations

__all__ = [
    "ServiceError",
    "InvalidInput",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "LastAdminKey",
    "QuotaExceeded",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "RateLimited",
    "Unavailable",
    "WebhooksUnavailable",
]


class ServiceError(Exception):
    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, detail: str | None = None, **extra: object) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)


class InvalidInput(ServiceError):
    status, code, title = 422, "invalid_input", "Invalid input"


class Unauthorized(ServiceError):
    status, code, title = 401, "unauthorized", "Missing or invalid credential"


class Forbidden(ServiceError):
    status, code, title = 403, "forbidden", "Not allowed for this credential"


class NotFound(ServiceError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(ServiceError):
    status, code, title = 409, "conflict", "Conflict with the current state"


class LastAdminKey(Conflict):
    code, title = "last_admin_key", "The tenant's last admin key"


class QuotaExceeded(Conflict):
    code, title = "quota_exceeded", "Quota exceeded"


class PayloadTooLarge(ServiceError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class UnsupportedMediaType(ServiceError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class RateLimited(ServiceError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, retry_after: int, detail: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))
        self.headers = headers or {}


class Unavailable(ServiceError):
    status, code, title = 503, "unavailable", "A backing service is unavailable"


class WebhooksUnavailable(ServiceError):
    """The server has no key to seal webhook secrets with (AUTHSERVER_WEBHOOK_KEY)."""

    status, code, title = 503, "webhooks_not_configured", "Webhooks are not configured on this server"
