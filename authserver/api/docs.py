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


class LeakPolicyView(msgspec.Struct):
    """What a leaked key's report does: ``revoke`` it at once (the default) or only ``notify``."""

    tenant: str
    leak_policy: Literal["revoke", "notify"]


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
_JWKS = "The public keys gateways verify with (ETag; 304 if unchanged)"
_DISCOVERY = "RFC 8414 / OpenID discovery"

_Operation = tuple[str, dict[int, ResponseSpec | None], bool]


def _admin(summary: str, status: int, model: Any, description: str, *problems: int) -> _Operation:
    """An operation that needs an admin key: its one success, the problems every
    admin call may answer (``_ADMIN``) and its own ``problems``."""
    return summary, {status: _ok(model, description), **dict.fromkeys((*_ADMIN, *problems))}, True


def _public(summary: str, model: Any, description: str, *problems: int,
            media_type: str = "application/json") -> _Operation:
    """An operation without an admin key: a 200 and ``problems``."""
    return summary, {200: _ok(model, description, media_type), **dict.fromkeys(problems)}, False


_OPERATIONS: dict[str, _Operation] = {
    # name: (summary, {status: success body or None for a problem}, needs an admin key)
    "mint": _admin("Mint an API key", 201, MintedKey, "The new key, with `key` shown this once", *_WITH_BODY),
    "list_keys": _admin("List API keys", 200, KeyPage, "A page of keys, newest first; `next_cursor` for the next",
                        422),
    "get_key": _admin("Get an API key", 200, KeyWithUsage, "The key (never the key string), with its usage", 404),
    "usage": _admin("A key's usage over time", 200, UsageSeries, "Calls gateways reported per hour or day", 404, 422),
    "update": _admin("Change a live API key", 200, KeyView, "The key as it is now (limits in effect at once)",
                     404, 409, *_WITH_BODY),
    "put_subject_limits": _admin("Set a subject's shared rate limits", 200, SubjectLimitsView,
                                 "The limits, in effect at gateways within a second", 404, *_WITH_BODY),
    "get_subject_limits": _admin("Get a subject's shared rate limits", 200, SubjectLimitsView,
                                 "The limits all keys of the subject share", 404),
    "delete_subject_limits": _admin("Remove a subject's shared rate limits", 200, SubjectLimitsView,
                                    "Removed: `rate_limits` is empty", 404),
    "list_admin_keys": _admin("List admin keys", 200, AdminKeyPage, "A page of admin keys, newest first", 422),
    "mint_admin_key": _admin("Mint an admin key", 201, MintedAdminKey, "The new admin key, `key` shown this once",
                             *_WITH_BODY),
    "get_admin_key": _admin("Get an admin key", 200, AdminKeyView, "The admin key (never the key string)", 404),
    "roll_admin_key": _admin("Roll an admin key", 201, MintedAdminKey, "The new admin key (shown once), the old one",
                             404, 409, *_WITH_BODY),
    "revoke_admin_key": _admin("Revoke an admin key", 200, AdminKeyView, "The revoked admin key", 404, 409),
    "roll": _admin("Roll an API key", 201, RolledKey, "The new key (shown once) and the old one",
                   404, 409, *_WITH_BODY),
    "revoke": _admin("Revoke an API key", 200, KeyView, "The revoked key (revoking twice is not an error)", 404),
    "audit_log": _admin("Read the audit log", 200, AuditPage, "Events, newest first; `next_cursor` for more", 422),
    "create_webhook": _admin("Register a webhook endpoint", 201, CreatedWebhook,
                             "The endpoint, with its signing `secret` shown this once", 409, *_WITH_BODY),
    "list_webhooks": _admin("List webhook endpoints", 200, WebhookPage, "The tenant's endpoints"),
    "get_webhook": _admin("Get a webhook endpoint", 200, WebhookView, "The endpoint (never its secret)", 404),
    "delete_webhook": _admin("Remove a webhook endpoint", 200, WebhookView, "The removed endpoint", 404),
    "list_endpoint_deliveries": _admin("An endpoint's deliveries", 200, DeliveryPage, "Newest first", 404),
    "list_deliveries": _admin("All webhook deliveries", 200, DeliveryPage, "Newest first, to every endpoint"),
    "replay_delivery": _admin("Replay a webhook delivery", 201, DeliveryView,
                              "The new delivery, with the same `webhook_id`", 404, 409, 413),
    "webhook_settings": _admin("Get the tenant's webhook settings", 200, WebhookSettingsView, "The settings"),
    "set_webhook_settings": _admin("Set the tenant's webhook settings", 200, WebhookSettingsView, "The settings",
                                   *_WITH_BODY),
    "leak_policy": _admin("Get the tenant's leak policy", 200, LeakPolicyView, "The policy"),
    "set_leak_policy": _admin("Set the tenant's leak policy", 200, LeakPolicyView,
                              "The policy, in effect for the next report", *_WITH_BODY),
    # a gateway's credential, not an admin key: its own problems
    "introspect": ("Introspect a key (RFC 7662)", {200: _ok(Introspection, "Whether the key is active, and why not"),
                                                   **dict.fromkeys((400, 401, 429, 503, *_WITH_BODY))}, True),
    "create_portal_session": _admin("Create a consumer portal sign-in link", 201, PortalSessionLink,
                                    "The one-time URL to send the customer's browser to", *_WITH_BODY),
    "jwks": _public("Get a JWKS", JWKS, _JWKS, *_PUBLIC),
    "default_jwks": _public("Get the default tenant's JWKS", JWKS, _JWKS, 404),
    "discovery": _public("Get a discovery document", Discovery, _DISCOVERY, *_PUBLIC),
    "default_discovery": _public("Get the default tenant's discovery document", Discovery, _DISCOVERY, 404),
    "secret_scanning": _public("Report leaked keys (GitHub secret scanning)", list[LeakLabel],
                               "Per match, in order: ours (`true_positive`) or not", 400, 401, 413, 503),
    "healthz": _public("Liveness", Health, "The process is up; `database` says whether it reaches it"),
    "metrics": _public("Prometheus metrics", str, "Prometheus text format", media_type="text/plain; version=0.0.4"),
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
