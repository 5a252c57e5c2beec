"""Request bodies, declared once with their limits (msgspec).

``KeySpec`` is the body of ``POST /v1/keys`` and what the CLI and the portal
build (with :func:`key_spec`), so every limit on a key lives here. The HTTP
API decodes strictly (a schema mismatch is a 400); anything else that builds a
spec gets a 422 (:class:`~authserver.errors.InvalidInput`), as the service
always answered.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

import keys

from .durations import parse_duration
from .errors import InvalidInput

__all__ = [
    "WEBHOOK_ID_PATTERN",
    "WebhookSettings",
    "WebhookSpec",
    "ADMIN_KEYS_WRITE",
    "ADMIN_SCOPES",
    "ALGORITHM_NAMES",
    "AUDIT_ACTION_PATTERN",
    "KEYS_READ",
    "KEYS_WRITE",
    "AdminKeySpec",
    "ConsumerPolicy",
    "KEY_ID_PATTERN",
    "MAX_EXPIRES_IN",
    "MAX_METADATA_BYTES",
    "NAME_MAX_LENGTH",
    "SEARCH_MAX_LENGTH",
    "SUBJECT_MAX_LENGTH",
    "TEXT_PATTERN",
    "KeySpec",
    "PortalSessionRequest",
    "RateLimit",
    "SubjectLimitsBody",
    "RollRequest",
    "key_spec",
]

# Text that ends up in the database, in JWT claims and (sub) in gateway headers:
# no control characters. NUL is refused by PostgreSQL; CR/LF have no place in a header.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"
# key ids are RFC 7638 thumbprints: base64url
KEY_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
SCOPE_PATTERN = r"^[\x21\x23-\x5b\x5d-\x7e]+$"  # RFC 6749 section 3.3
# every algorithm a key may use (the one place this module reads the registry)
ALGORITHM_NAMES: tuple[str, ...] = keys.supported_algorithms()
MAX_EXPIRES_IN = 10 * 365 * 86400
MAX_METADATA_BYTES = 4096
MAX_METADATA_DEPTH = 16
NAME_MAX_LENGTH = 200
SUBJECT_MAX_LENGTH = 256
SEARCH_MAX_LENGTH = 200  # a list filter (?q=): a substring of a name or subject, or a key id prefix
AUDIT_ACTION_PATTERN = r"^[a-z][a-z_]{0,15}(\.[a-z_]{1,15})?$"  # key.mint, portal.sign_in: an audit filter

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=NAME_MAX_LENGTH, pattern=TEXT_PATTERN)]
Subject = Annotated[str, msgspec.Meta(min_length=1, max_length=SUBJECT_MAX_LENGTH, pattern=TEXT_PATTERN)]
Scope = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=SCOPE_PATTERN)]
Seconds = Annotated[int, msgspec.Meta(ge=1, le=MAX_EXPIRES_IN)]
# a closed set: it also labels the mint latency metric, so no client string may reach it
if TYPE_CHECKING:
    Algorithm = str
else:  # a Literal built from the registry, so msgspec refuses any other name
    Algorithm = Literal[ALGORITHM_NAMES]


# --- admin keys: the scope set, stated once (authserver.auth guards check it) ---
KEYS_READ = "keys:read"  # read API keys, admin keys and the audit log; sign in to the portal
KEYS_WRITE = "keys:write"  # mint, roll and revoke API keys
ADMIN_KEYS_WRITE = "admin-keys:write"  # mint, roll and revoke admin keys, never beyond the caller's own scopes
ADMIN_SCOPES: tuple[str, ...] = (KEYS_READ, KEYS_WRITE, ADMIN_KEYS_WRITE)
if TYPE_CHECKING:
    AdminScope = str
else:  # msgspec refuses any other scope name
    AdminScope = Literal[ADMIN_SCOPES]


class RateLimit(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=10**9)]
    window_seconds: Annotated[int, msgspec.Meta(ge=1, le=2678400)]


RateLimits = Annotated[list[RateLimit], msgspec.Meta(max_length=8)]


class Refill(msgspec.Struct, forbid_unknown_fields=True):
    """At the start of each UTC day or month the credits are set back to ``amount``."""

    amount: Annotated[int, msgspec.Meta(ge=1, le=10**12)]
    interval: Literal["day", "month"]


class Credits(msgspec.Struct, forbid_unknown_fields=True):
    """Calls a key may still make: each call at the gateway costs 1 (or its route's cost)."""

    remaining: Annotated[int, msgspec.Meta(ge=0, le=10**12)]
    refill: Refill | None = None

    def columns(self, now: float) -> dict[str, Any]:
        from .credits import period_start  # the rule for periods lives with the spending

        return {
            "credits_remaining": self.remaining,
            "credits_refill_amount": self.refill.amount if self.refill else None,
            "credits_refill_interval": self.refill.interval if self.refill else None,
            # the current period counts as refilled: ``remaining`` is what it has left
            "credits_refilled_at": period_start(self.refill.interval, now) if self.refill else None,
        }


NO_CREDITS: dict[str, Any] = {"credits_remaining": None, "credits_refill_amount": None,
                              "credits_refill_interval": None, "credits_refilled_at": None}


class KeySpec(msgspec.Struct, forbid_unknown_fields=True):
    """What a new key is: the same for the API, the CLI, the portal and a roll."""

    name: Name | None = None
    subject: Subject | None = None
    scopes: Annotated[list[Scope], msgspec.Meta(max_length=64)] = []
    expires_in: Seconds | None = None  # seconds from now
    algorithm: Algorithm | None = None
    metadata: dict[str, Any] = {}
    rate_limits: RateLimits | None = None
    credits: Credits | None = None

    def rate_limit_dicts(self) -> list[dict[str, int]] | None:
        return None if self.rate_limits is None else [msgspec.structs.asdict(r) for r in self.rate_limits]


class SubjectLimitsBody(msgspec.Struct, forbid_unknown_fields=True):
    """Rate limits shared by every API key of one subject (to remove them: DELETE)."""

    rate_limits: Annotated[list[RateLimit], msgspec.Meta(min_length=1, max_length=8)]


class KeyPatch(msgspec.Struct, forbid_unknown_fields=True):
    """What may change on a live key without re-issuing it (the token's claims
    cannot change: scopes, subject and expiry need a roll). An absent field is
    left alone; ``rate_limits: null`` (or []) removes the limits, ``credits: null`` the credits."""

    name: Name | None | msgspec.UnsetType = msgspec.UNSET
    metadata: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    rate_limits: RateLimits | None | msgspec.UnsetType = msgspec.UNSET
    credits: Credits | None | msgspec.UnsetType = msgspec.UNSET

    def changes(self, now: float = 0.0) -> dict[str, Any]:
        """The given fields as column values."""
        out: dict[str, Any] = {}
        if self.name is not msgspec.UNSET:
            out["name"] = self.name
        if self.metadata is not msgspec.UNSET:
            _check_metadata(self.metadata)
            _check_metadata_size(self.metadata)
            out["meta"] = dict(self.metadata)
        if self.rate_limits is not msgspec.UNSET:
            out["rate_limits"] = [msgspec.structs.asdict(r) for r in self.rate_limits or []] or None
        if self.credits is not msgspec.UNSET:
            out |= self.credits.columns(now) if self.credits is not None else NO_CREDITS
        if not out:
            raise InvalidInput("nothing to change: give name, metadata, rate_limits or credits")
        return out


def parse_rate_limit(text: str) -> RateLimit:
    """``LIMIT/WINDOW`` as the CLI takes it: ``10/s``, ``100/10s``, ``1000/h``, ``5000/1d`` (a bare
    number of seconds too); ValueError if not."""
    limit, sep, window = text.strip().partition("/")
    window = window.strip().lower()
    try:
        if not sep or not window:
            raise ValueError
        value = {"limit": int(limit), "window_seconds": parse_duration("1" + window if window.isalpha() else window)}
        return msgspec.convert(value, RateLimit)
    except (ValueError, msgspec.ValidationError):
        raise ValueError(f"a rate limit is LIMIT/WINDOW, e.g. 10/s, 100/10s, 1000/h; got {text!r}") from None


class RollRequest(msgspec.Struct, forbid_unknown_fields=True):
    grace_seconds: Annotated[int, msgspec.Meta(ge=0)] | None = None
    expires_in: Seconds | None = None


class AdminKeySpec(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/admin-keys``. ``scopes`` None: the caller's own
    (the CLI: all of them); [] is a key that can only introspect."""

    name: Name | None = None
    scopes: Annotated[list[AdminScope], msgspec.Meta(max_length=len(ADMIN_SCOPES))] | None = None
    expires_in: Seconds | None = None


# --- consumer portal sessions (POST /v1/portal/sessions) ------------------------
SIGN_IN_TTL_DEFAULT = 600  # a sign-in link is for a redirect now, not for an email
SIGN_IN_TTL_MAX = 3600
CONSUMER_MAX_KEYS_MAX = 1000


class ConsumerPolicy(msgspec.Struct, forbid_unknown_fields=True):
    """What a consumer may do with their own keys in the portal. ``max_keys``:
    active keys of the subject (a key in its roll grace does not count);
    ``allowed_scopes``: the scopes they may choose from ([] none);
    ``max_lifetime``: seconds, every key they create or roll expires within it
    (None: they may create keys that never expire)."""

    max_keys: Annotated[int, msgspec.Meta(ge=1, le=CONSUMER_MAX_KEYS_MAX)] = 5
    allowed_scopes: Annotated[list[Scope], msgspec.Meta(max_length=64)] = []
    max_lifetime: Seconds | None = None


class PortalSessionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A one-time consumer portal sign-in link for ``subject``."""

    subject: Subject
    return_url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048, pattern=TEXT_PATTERN)] | None = None
    ttl: Annotated[int, msgspec.Meta(ge=1, le=SIGN_IN_TTL_MAX)] = SIGN_IN_TTL_DEFAULT
    policy: ConsumerPolicy = msgspec.field(default_factory=ConsumerPolicy)


def _check_metadata(value: Any, depth: int = 0) -> None:
    """Free-form metadata, but storable everywhere: bounded nesting, no NUL
    (PostgreSQL's JSONB refuses \\u0000, SQLite would keep it)."""
    if depth > MAX_METADATA_DEPTH:
        raise InvalidInput(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_metadata(k, depth + 1)
            _check_metadata(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_metadata(v, depth + 1)
    elif isinstance(value, str) and "\x00" in value:
        raise InvalidInput("metadata strings cannot contain NUL characters")


def _check_metadata_size(metadata: dict[str, Any]) -> None:
    if len(json.dumps(metadata, separators=(",", ":"))) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes as JSON")


def key_spec(value: Any, *, strict: bool = True) -> KeySpec:
    """Build a checked KeySpec from builtins (a dict) or from a KeySpec made by
    hand (its constraints are only checked on conversion). 422 if it breaks one."""
    if isinstance(value, KeySpec):
        _check_metadata(value.metadata)  # before the round trip: depth is bounded first
        value = msgspec.to_builtins(value)
    elif isinstance(value, dict):
        _check_metadata(value.get("metadata"))
    try:
        spec = msgspec.convert(value, KeySpec, strict=strict)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"the key spec is not valid: {exc}") from None
    _check_metadata_size(spec.metadata)
    return spec


# --- webhooks (services/webhooks.py checks the URL and the event types) ---
WEBHOOK_ID_PATTERN = r"^(ep|dlv)_[0-9a-f]{1,40}$"  # endpoint and delivery ids


class WebhookSpec(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/webhooks``: ``event_types`` None is all of them."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    event_types: Annotated[list[Annotated[str, msgspec.Meta(max_length=32)]], msgspec.Meta(max_length=16)] | None = None
    description: Annotated[str, msgspec.Meta(max_length=200, pattern=TEXT_PATTERN)] | None = None


class LeakPolicyBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``PUT /v1/tenant/leak-policy``: ``revoke`` or ``notify`` (checked
    by the tenant service, services.leaks.LEAK_POLICIES)."""

    leak_policy: Annotated[str, msgspec.Meta(max_length=16)]


class WebhookSettings(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``PUT /v1/webhooks/settings``: key.expiring fires this many days before a key's exp."""

    expiring_days: Annotated[int, msgspec.Meta(ge=1, le=365)]
