"""What /schema/openapi.json says about each operation: summaries, the
admin-key security scheme, the response bodies (documentation-only msgspec
models of what api/views.py and the controllers build) and the RFC 9457
problems each operation can answer, with their ``code`` values.

Controllers take their documentation with ``**docs.op("name")``; the response
models are checked against real answers in tests/server/test_openapi.py.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, Example, SecurityScheme

from .. import errors
from ..problems import PROBLEM
from ..schemas import ALGORITHM_NAMES, RateLimit

__all__ = ["COMPONENTS", "KEY_STATES", "SECURITY", "op", "problem_codes"]

# every state api/views.py can report (ApiKey.state); `state=` filters also take live and all
KEY_STATES = ("active", "rolling", "rolled", "expired", "revoked")
STATUSES = ("VALID", "RATE_LIMITED", "USAGE_EXCEEDED", "EXPIRED", "REVOKED", "INVALID")
SECURITY_SCHEME = "adminKey"
SECURITY: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
COMPONENTS = Components(security_schemes={SECURITY_SCHEME: SecurityScheme(
    type="http", scheme="bearer", bearer_format="sk_admin_<JWT>",
    description="A tenant admin key (`authserver tenant create` or `quickstart` prints the first one): "
                "`Authorization: Bearer sk_admin_...`. API keys (sk_live_...) are refused here.",
)})

if TYPE_CHECKING:
    State = str
    Algorithm = str
    Status = str
else:
    State = Literal[KEY_STATES]
    Algorithm = Literal[ALGORITHM_NAMES]
    Status = Literal[STATUSES]


def problem_codes() -> dict[int, tuple[str, ...]]:
    """Each HTTP status and the problem ``code`` values sent with it: the
    service errors (errors.py) plus the ones problems.py adds itself."""
    codes: dict[int, list[str]] = {}
    classes: list[type[errors.ServiceError]] = [errors.ServiceError, *errors.ServiceError.__subclasses__()]
    for cls in classes:
        codes.setdefault(cls.status, []).append(cls.code)
    codes[400].append("invalid_request")  # a request that does not match this schema
    codes.setdefault(413, []).append("payload_too_large")
    return {status: tuple(dict.fromkeys(c)) for status, c in sorted(codes.items())}


# --- response bodies -----------------------------------------------------------


class AdminKeyView(msgspec.Struct, kw_only=True):
    """An admin key's public description (never published to gateways): never the key string."""

    id: str
    kind: Literal["admin"]
    name: str | None
    scopes: list[str]
    prefix: str
    last4: str
    hint: str
    algorithm: Algorithm
    state: State
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    grace_ends_at: int | None
    rolled_from: str | None
    rolled_to: str | None


class KeyView(AdminKeyView, kw_only=True):
    """A key's public description: never the key string."""

    kind: Literal["api", "admin"]  # type: ignore[assignment]  # API key views list both
    subject: str | None
    shard: int | None
    published_at: int
    gateway_accepts_after: int
    metadata: dict[str, Any]
    rate_limits: list[RateLimit] | None
    last_used_at: int | None = None  # the last call a gateway reported
    credits: KeyCredits | None = None


class SubjectLimitsView(msgspec.Struct):
    """Rate limits shared by every API key of one subject, counted together at the gateway
    (empty once removed)."""

    subject: str
    rate_limits: list[RateLimit]
    updated_at: int


class CreditRefill(msgspec.Struct):
    amount: int
    interval: Literal["day", "month"]


class KeyCredits(msgspec.Struct):
    """Calls the key may still make through gateways (a due refill applied)."""

    remaining: int
    refill: CreditRefill | None


class UsageTotals(msgspec.Struct):
    """Calls gateways reported, by status class."""

    s2xx: int = msgspec.field(name="2xx")
    s3xx: int = msgspec.field(name="3xx")
    s4xx: int = msgspec.field(name="4xx")
    s5xx: int = msgspec.field(name="5xx")


class KeyWithUsage(KeyView, kw_only=True):
    usage_totals: UsageTotals


class UsagePoint(UsageTotals, kw_only=True):
    start: int  # UNIX seconds: the start of the hour or day


class UsageSeries(msgspec.Struct):
    data: list[UsagePoint]
    granularity: Literal["hour", "day"]
    start: int = msgspec.field(name="from")
    end: int = msgspec.field(name="to")


class MintedAdminKey(AdminKeyView, kw_only=True):
    key: str
    warning: str | None = None
    previous: AdminKeyView | None = None  # after a roll: the old key, valid until its grace ends


class AdminKeyPage(msgspec.Struct):
    data: list[AdminKeyView]
    next_cursor: str | None


class MintedKey(KeyView, kw_only=True):
    """A new key: ``key`` is here once and never again."""

    key: str
    warning: str


class RolledKey(KeyView, kw_only=True):
    """The new key (``key`` shown once) and the old one, valid until its grace ends."""

    key: str
    previous: KeyView


class KeyPage(msgspec.Struct):
    data: list[KeyView]
    next_cursor: str | None


class AuditEventView(msgspec.Struct):
    id: int
    at: int
    actor: str
    action: str
    target: str | None
    remote_addr: str | None
    details: dict[str, Any]


class AuditPage(msgspec.Struct, kw_only=True):
    data: list[AuditEventView]
    next_cursor: str | None
    next_before_id: int | None = None  # deprecated: pass next_cursor back as cursor


class WebhookView(msgspec.Struct, kw_only=True):
    """A webhook endpoint: never its signing secret."""

    id: str
    url: str
    description: str | None
    event_types: list[str]
    created_at: int
    deleted_at: int | None


class CreatedWebhook(WebhookView, kw_only=True):
    secret: str  # whsec_...: shown this once
    warning: str


class WebhookPage(msgspec.Struct):
    data: list[WebhookView]


class DeliveryView(msgspec.Struct, kw_only=True):
    """One delivery in the log (never the payload)."""

    id: str
    webhook_id: str
    event_type: str
    endpoint_id: str
    status: Literal["pending", "delivered", "failed", "cancelled"]
    attempts: int
    next_attempt_at: int | None
    last_attempt_at: int | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: int | None
    created_at: int | None
    replay_of: str | None


class DeliveryPage(msgspec.Struct):
    data: list[DeliveryView]
    next_cursor: str | None


class WebhookSettingsView(msgspec.Struct):
    expiring_days: int


class Introspection(msgspec.Struct, kw_only=True, omit_defaults=True):
    """RFC 7662; ``status`` says why a key is not active. Claims only when active."""

    active: bool
    status: Status
    token_type: Literal["api_key"] | None = None
    kid: str | None = None
    iss: str | None = None
    aud: str | None = None
    sub: str | None = None
    iat: int | None = None
    exp: int | None = None
    jti: str | None = None
    scope: str | None = None
    rate_limits: list[RateLimit] | None = None
    rate_limit_state: list[dict[str, int]] | None = None  # each window as gateways count it
    subject_rate_limit_state: list[dict[str, int]] | None = None  # the windows all keys of its subject share
    credits: KeyCredits | None = None
    metadata: dict[str, Any] | None = None
    published_until: int | None = None


class PortalSessionLink(msgspec.Struct):
    """A one-time consumer portal sign-in URL (it holds the only copy of its token)."""

    url: str
    expires_at: int


class JWK(msgspec.Struct, kw_only=True):
    """A public key (RFC 7517): RSA (n, e), EC (crv, x, y) or OKP (crv, x)."""

    kty: Literal["RSA", "EC", "OKP"]
    kid: str
    alg: str | None = None
    use: str | None = None
    n: str | None = None
    e: str | None = None
    crv: str | None = None
    x: str | None = None
    y: str | None = None


class JWKS(msgspec.Struct):
    keys: list[JWK]


class Discovery(msgspec.Struct, kw_only=True):
    """RFC 8414 / OpenID discovery for a tenant."""

    issuer: str
    jwks_uri: str
    introspection_endpoint: str
    introspection_endpoint_auth_methods_supported: list[str]
    id_token_signing_alg_values_supported: list[str]
    audience: str


class Health(msgspec.Struct):
    status: Literal["ok"]
    database: Literal["ok", "unreachable"]
    tenants: int


class LeakLabel(msgspec.Struct):
    """One match of a secret-scanning report, named by the SHA-256 of its token."""

    token_hash: str
    token_type: str
    label: Literal["true_positive", "false_positive"]


class ProblemField(msgspec.Struct, kw_only=True):
    key: str | None = None
    message: str | None = None
    source: str | None = None


def _problem_model(status: int, codes: tuple[str, ...]) -> type[msgspec.Struct]:
    """RFC 9457 problem details as sent with ``status``: its codes as an enum."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        ("type", str), ("title", str), ("status", Literal[status]), ("code", Literal[codes]),
        ("detail", str | None, None),
    ]
    if status == 400:
        fields.append(("errors", list[ProblemField] | None, None))  # invalid_request: which field, why
    return msgspec.defstruct(f"Problem{status}", fields, kw_only=True)


_WHEN = {
    400: "the request does not match the schema (`invalid_request`, with `errors`) or cannot be read",
    401: "no admin key, or one that does not verify (with `WWW-Authenticate: Bearer`)",
    403: "the admin key lacks the scope this needs",
    404: "no such key, tenant or shard",
    409: "the key's state does not allow it (e.g. rolling a revoked key)",
    413: "the body is larger than AUTHSERVER_MAX_BODY_BYTES",
    415: "the body is not application/json",
    422: "a value is out of range or breaks a rule of the service",
    429: "a rate limit was reached: `Retry-After` and `RateLimit-*` headers say when to retry",
    503: "the database is unavailable, or (webhooks) no AUTHSERVER_WEBHOOK_KEY is set; nothing was changed",
}


@functools.cache  # one model per status, shared by every operation
def _problem(status: int) -> ResponseSpec:
    codes = problem_codes()[status]
    example = {"type": f"https://authserver.dev/problems/{codes[0]}", "title": "...", "status": status,
               "code": codes[0], "detail": _WHEN[status]}
    return ResponseSpec(
        data_container=_problem_model(status, codes), media_type=PROBLEM, generate_examples=False,
        description=f"{_WHEN[status][0].upper()}{_WHEN[status][1:]}; `code`: {', '.join(codes)}",
        examples=[Example(summary=codes[0], value=example)],
    )


def _ok(model: Any, description: str, media_type: str = "application/json") -> ResponseSpec:
    return ResponseSpec(data_container=model, description=description, media_type=media_type,
                        generate_examples=False)


_ADMIN = (400, 401, 403, 429, 503)
_WITH_BODY = (413, 415, 422)
_PUBLIC = (400, 404)

_OPERATIONS: dict[str, tuple[str, dict[int, ResponseSpec | None], bool]] = {
    # name: (summary, {status: success body or None for a problem}, needs an admin key)
    "mint": ("Mint an API key", {201: _ok(MintedKey, "The new key, with `key` shown this once"),
                                 **dict.fromkeys(_ADMIN + _WITH_BODY)}, True),
    "list_keys": ("List API keys", {200: _ok(KeyPage, "A page of keys, newest first; `next_cursor` for the next"),
                                    **dict.fromkeys((*_ADMIN, 422))}, True),
    "get_key": ("Get an API key", {200: _ok(KeyWithUsage, "The key (never the key string), with its usage"),
                                   **dict.fromkeys((*_ADMIN, 404))}, True),
    "usage": ("A key's usage over time", {200: _ok(UsageSeries, "Calls gateways reported per hour or day"),
                                          **dict.fromkeys((*_ADMIN, 404, 422))}, True),
    "update": ("Change a live API key", {200: _ok(KeyView, "The key as it is now (limits in effect at once)"),
                                         **dict.fromkeys((*_ADMIN, 404, 409, *_WITH_BODY))}, True),
    "put_subject_limits": ("Set a subject's shared rate limits",
                           {200: _ok(SubjectLimitsView, "The limits, in effect at gateways within a second"),
                            **dict.fromkeys((*_ADMIN, 404, *_WITH_BODY))}, True),
    "get_subject_limits": ("Get a subject's shared rate limits",
                           {200: _ok(SubjectLimitsView, "The limits all keys of the subject share"),
                            **dict.fromkeys((*_ADMIN, 404))}, True),
    "delete_subject_limits": ("Remove a subject's shared rate limits",
                              {200: _ok(SubjectLimitsView, "Removed: `rate_limits` is empty"),
                               **dict.fromkeys((*_ADMIN, 404))}, True),
    "list_admin_keys": ("List admin keys", {200: _ok(AdminKeyPage, "A page of admin keys, newest first"),
                                            **dict.fromkeys((*_ADMIN, 422))}, True),
    "mint_admin_key": ("Mint an admin key", {201: _ok(MintedAdminKey, "The new admin key, `key` shown this once"),
                                             **dict.fromkeys(_ADMIN + _WITH_BODY)}, True),
    "get_admin_key": ("Get an admin key", {200: _ok(AdminKeyView, "The admin key (never the key string)"),
                                           **dict.fromkeys((*_ADMIN, 404))}, True),
    "roll_admin_key": ("Roll an admin key", {201: _ok(MintedAdminKey, "The new admin key (shown once), the old one"),
                                             **dict.fromkeys((*_ADMIN, 404, 409, *_WITH_BODY))}, True),
    "revoke_admin_key": ("Revoke an admin key", {200: _ok(AdminKeyView, "The revoked admin key"),
                                                 **dict.fromkeys((*_ADMIN, 404, 409))}, True),
    "roll": ("Roll an API key", {201: _ok(RolledKey, "The new key (shown once) and the old one"),
                                 **dict.fromkeys((*_ADMIN, 404, 409, *_WITH_BODY))}, True),
    "revoke": ("Revoke an API key", {200: _ok(KeyView, "The revoked key (revoking twice is not an error)"),
                                     **dict.fromkeys((*_ADMIN, 404))}, True),
    "audit_log": ("Read the audit log", {200: _ok(AuditPage, "Events, newest first; `next_cursor` for more"),
                                         **dict.fromkeys((*_ADMIN, 422))}, True),
    "create_webhook": ("Register a webhook endpoint",
                       {201: _ok(CreatedWebhook, "The endpoint, with its signing `secret` shown this once"),
                        **dict.fromkeys((*_ADMIN, 409, *_WITH_BODY))}, True),
    "list_webhooks": ("List webhook endpoints", {200: _ok(WebhookPage, "The tenant's endpoints"),
                                                 **dict.fromkeys(_ADMIN)}, True),
    "get_webhook": ("Get a webhook endpoint", {200: _ok(WebhookView, "The endpoint (never its secret)"),
                                               **dict.fromkeys((*_ADMIN, 404))}, True),
    "delete_webhook": ("Remove a webhook endpoint", {200: _ok(WebhookView, "The removed endpoint"),
                                                     **dict.fromkeys((*_ADMIN, 404))}, True),
    "list_endpoint_deliveries": ("An endpoint's deliveries", {200: _ok(DeliveryPage, "Newest first"),
                                                              **dict.fromkeys((*_ADMIN, 404))}, True),
    "list_deliveries": ("All webhook deliveries", {200: _ok(DeliveryPage, "Newest first, to every endpoint"),
                                                   **dict.fromkeys(_ADMIN)}, True),
    "replay_delivery": ("Replay a webhook delivery",
                        {201: _ok(DeliveryView, "The new delivery, with the same `webhook_id`"),
                         **dict.fromkeys((*_ADMIN, 404, 409, 413))}, True),
    "webhook_settings": ("Get the tenant's webhook settings", {200: _ok(WebhookSettingsView, "The settings"),
                                                               **dict.fromkeys(_ADMIN)}, True),
    "set_webhook_settings": ("Set the tenant's webhook settings", {200: _ok(WebhookSettingsView, "The settings"),
                                                                   **dict.fromkeys(_ADMIN + _WITH_BODY)}, True),
    "introspect": ("Introspect a key (RFC 7662)", {200: _ok(Introspection, "Whether the key is active, and why not"),
                                                   **dict.fromkeys((400, 401, 429, 503, *_WITH_BODY))}, True),
    "create_portal_session": ("Create a consumer portal sign-in link",
                              {201: _ok(PortalSessionLink, "The one-time URL to send the customer's browser to"),
                               **dict.fromkeys(_ADMIN + _WITH_BODY)}, True),
    "jwks": ("Get a JWKS", {200: _ok(JWKS, "The public keys gateways verify with (ETag; 304 if unchanged)"),
                            **dict.fromkeys(_PUBLIC)}, False),
    "default_jwks": ("Get the default tenant's JWKS",
                     {200: _ok(JWKS, "The public keys gateways verify with (ETag; 304 if unchanged)"),
                      **dict.fromkeys((404,))}, False),
    "discovery": ("Get a discovery document", {200: _ok(Discovery, "RFC 8414 / OpenID discovery"),
                                               **dict.fromkeys(_PUBLIC)}, False),
    "default_discovery": ("Get the default tenant's discovery document",
                          {200: _ok(Discovery, "RFC 8414 / OpenID discovery"), **dict.fromkeys((404,))}, False),
    "secret_scanning": ("Report leaked keys (GitHub secret scanning)",
                        {200: _ok(list[LeakLabel], "Per match, in order: ours (`true_positive`) or not"),
                         **dict.fromkeys((400, 401, 413, 503))}, False),
    "healthz": ("Liveness", {200: _ok(Health, "The process is up; `database` says whether it reaches it")}, False),
    "metrics": ("Prometheus metrics", {200: _ok(str, "Prometheus text format", "text/plain; version=0.0.4")},
                False),
}


def op(name: str) -> dict[str, Any]:
    """The route decorator's documentation arguments for operation ``name``."""
    summary, responses, secured = _OPERATIONS[name]
    out: dict[str, Any] = {
        "summary": summary,
        "responses": {status: spec if spec is not None else _problem(status) for status, spec in responses.items()},
    }
    if secured:
        out["security"] = SECURITY
    return out
