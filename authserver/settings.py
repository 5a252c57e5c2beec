"""All configuration, read once from the environment into one typed object.

Every variable is ``AUTHSERVER_<FIELD>`` (upper case). Nothing else in the
service reads ``os.environ``. A ``Settings`` is validated when it is built
(``Settings(...)``, ``Settings.from_env()`` or ``settings.replace(...)``):
the ranges are declared on the fields, the rules between fields are in
``__post_init__``; an invalid value raises ValueError naming its variable.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from msgspec.structs import force_setattr

import keys  # the algorithm registry; keys/ has no heavy imports

from . import clientaddr
from .durations import parse_duration

__all__ = ["DEFAULT_SQLITE_URL", "MAX_SECRET_SCANNING_BODY", "Settings", "parse_nodes"]

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./authserver.db"
# the most AUTHSERVER_SECRET_SCANNING_MAX_BODY_BYTES may be (the route's own cap)
MAX_SECRET_SCANNING_BODY = 16 * 1024 * 1024

# the spellings of a boolean accepted in the environment (case-insensitive)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

NonNegInt = Annotated[int, Meta(ge=0)]
PositiveInt = Annotated[int, Meta(ge=1)]
NonNegFloat = Annotated[float, Meta(ge=0)]


def _normalize_db_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://, sqlite:///)
    and pick the async driver for them."""
    for plain, async_ in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return async_ + url[len(plain):]
    return url


def parse_nodes(text: str) -> dict[str, str]:
    """``NODE_ID=TENANT[,NODE_ID=TENANT...]`` -> {node id: tenant id}; ValueError if malformed."""
    nodes: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node, sep, tenant = item.partition("=")
        if not sep or not node.strip() or not tenant.strip():
            raise ValueError(f"want NODE_ID=TENANT, got {item!r}")
        nodes[node.strip()] = tenant.strip()
    return nodes


def _var(name: str) -> str:
    return f"AUTHSERVER_{name.upper()}"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = DEFAULT_SQLITE_URL
    redis_url: str | None = None
    # prefix of every Redis key and channel, so several deployments can share one Redis
    redis_namespace: str = "authserver"
    # the base URL clients and gateways use; default http://{host}:{port}
    public_url: str | None = None
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    # How long gateways cache the JWKS (Envoy remote_jwks cache_duration): a new
    # key works at the gateway after at most this long; used in mint answers
    # and generated gateway configs.
    gateway_cache_seconds: PositiveInt = 300
    # HTTP Cache-Control max-age on JWKS responses (for proxies and clients).
    jwks_max_age_seconds: NonNegInt = 60
    default_grace_seconds: NonNegInt = 86400
    max_grace_seconds: NonNegInt = 30 * 86400
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024
    default_algorithm: str = "RS256"
    default_tenant: str = "default"
    page_size_max: PositiveInt = 500
    # worker threads for key generation (RSA-2048 ~35 ms of CPU each)
    keygen_threads: PositiveInt = 2
    # Fast mint (opt-in): pre-generated keypairs kept in memory only, never written.
    mint_pool_size: NonNegInt = 0
    mint_pool_algorithms: str = "RS256"  # comma-separated
    mint_pool_max_age_seconds: NonNegFloat = 3600.0
    # Instant activation (opt-in): publish public halves of pooled keypairs per
    # tenant before issuing them, so a key works at a gateway's first call.
    instant_activation: bool = False
    instant_activation_pool_size: NonNegInt = 32
    instant_activation_max_age_seconds: NonNegFloat = 6 * 3600.0
    log_level: str = "INFO"
    log_json: bool = True
    # Redis: local caches are trusted this long without an invalidation channel
    degraded_cache_ttl_seconds: NonNegFloat = 2.0
    # rate limits (requests per window); 0 disables one
    rate_limit_admin_per_minute: NonNegInt = 600
    rate_limit_introspect_per_minute: NonNegInt = 6000
    rate_limit_auth_failures_per_minute: NonNegInt = 30
    # comma-separated CIDRs of the proxies (load balancers) in front of us:
    # only from these are X-Forwarded-For / Forwarded read; empty trusts none
    trusted_proxies: str = ""
    run_migrations: bool = True
    # Envoy's control plane (gateways/xds.py): ADS over gRPC on this port; unset: off
    xds_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    xds_host: str = "127.0.0.1"
    # the rate-limit service also on this port (on xds_host, with its TLS) over a lean
    # HTTP/2 transport (gateways/leangrpc.py): ~1/6 of grpcio's CPU per call; unset: off
    ratelimit_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    # a key far from its limit is answered without waiting on Redis: each replica may let
    # through up to 1/N of what is left before Redis counts it (ratelimit.RedisLimiter;
    # the limit still holds across any number of replicas); 0: every decision waits on Redis
    ratelimit_share: NonNegInt = 4
    # who may subscribe: comma-separated NODE_ID=TENANT (Envoy's node.id; empty: nobody)
    xds_nodes: str = ""
    # TLS with client certificates for remote gateways: all three files, or none (plaintext)
    xds_tls_cert: str | None = None
    xds_tls_key: str | None = None
    xds_tls_client_ca: str | None = None
    # usage from gateways' access logs is written in batches this often (last_used_at lags by about this)
    usage_flush_seconds: Annotated[float, Meta(gt=0, le=3600)] = 2.0
    # cap on a tenant's live API keys (mint and roll answer 409 quota_exceeded
    # at it); 0: no cap. `authserver tenant quota T --max-live-keys N` overrides it per tenant
    max_live_keys_per_tenant: NonNegInt = 1_000_000
    # instant activation: a replica renews the lease of its pre-published keys
    # every third of this; those of a replica that stopped renewing (killed:
    # their private halves died with it) leave every JWKS when it runs out
    instant_activation_lease_seconds: Annotated[float, Meta(gt=0)] = 60.0
    # --- serving: metrics access (issue 16) ---
    # /metrics on its own listener (0: none); loopback unless said otherwise
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] = 0
    metrics_host: str = "127.0.0.1"
    # bearer token for /metrics (on the public port it is 404 without it)
    metrics_token: str | None = None
    # --- serving: slow clients (issue 16) ---
    # a request's head (line and headers), then its body, must arrive within these
    header_timeout_seconds: Annotated[float, Meta(gt=0)] = 10.0
    body_timeout_seconds: Annotated[float, Meta(gt=0)] = 30.0
    # open client connections at most; 0: the descriptor limit minus headroom
    max_connections: NonNegInt = 0
    # `serve`'s event loop (each worker's too): auto is uvloop when it is installed, else asyncio
    loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    # signs the portal's sign-in form tokens; the same value on every replica lets a
    # form served by one be posted to another (a mounted secret, never the database).
    # Unset: one per process (`serve --workers N` shares one among its workers)
    portal_secret: str | None = None
    # --- webhooks (issue 15) ---
    # the key that seals webhook signing secrets (base64url, 32 bytes), or a
    # file holding it; never in the database. Without one, webhooks are refused.
    webhook_key: str | None = None
    webhook_key_file: str | None = None
    # keys that sealed secrets before a rotation, comma-separated: they only open,
    # until `authserver webhooks reseal` has sealed everything under the current key
    webhook_previous_keys: str | None = None
    # http:// endpoints are refused except on loopback with this (tests, local receivers)
    webhook_allow_http_loopback: bool = False
    # deliveries to private, link-local or other non-public addresses (checked on
    # the address connected to, after DNS) are refused unless this is set
    webhook_allow_private_networks: bool = False
    webhook_max_attempts: PositiveInt = 8
    # the n-th retry waits about base * 2**(n-1) (half of it random), at most max
    webhook_retry_base_seconds: Annotated[float, Meta(gt=0)] = 10.0
    webhook_retry_max_seconds: Annotated[float, Meta(gt=0)] = 6 * 3600.0
    webhook_timeout_seconds: Annotated[float, Meta(gt=0, le=300)] = 10.0
    # a sender's claim on a delivery; a killed sender's deliveries are sent again after it
    webhook_lease_seconds: Annotated[float, Meta(gt=0)] = 60.0
    webhook_poll_seconds: Annotated[float, Meta(gt=0)] = 1.0
    # key.expiring / key.grace_ending: how often keys are scanned, and how long before a grace ends
    webhook_scan_seconds: Annotated[float, Meta(gt=0)] = 60.0
    webhook_grace_ending_seconds: NonNegInt = 3600

    # --- leaked keys (issue 15): GitHub's secret-scanning partner program ---
    # where GitHub's signing keys are read: an https:// URL, or a file (path or file://)
    secret_scanning_keys_url: str = "https://api.github.com/meta/public_keys/secret_scanning"
    # reports are batches of matches: larger than an ordinary API body
    secret_scanning_max_body_bytes: Annotated[int, Meta(ge=1024, le=MAX_SECRET_SCANNING_BODY)] = 1024 * 1024

    # a Server-Timing header with the stages of a mint (auth, keygen, db, ...):
    # for profiling and the benchmark; off, since it tells callers about our internals
    server_timing: bool = False
    # false: a mint's commit does not wait for the disk (authserver.db.writes):
    # a power loss or OS crash (not a killed process) may lose the last mints
    # acknowledged (rows and audit events). Revocations, rolls and admin keys always wait
    durable_mints: bool = True
    # SQLite: the server checkpoints its WAL in a thread every this many seconds,
    # so no commit pays for it (authserver.db.checkpoints); 0: SQLite's own,
    # inside the commit that takes the WAL past 1000 pages
    sqlite_checkpoint_seconds: NonNegFloat = 1.0

    def __post_init__(self) -> None:
        # A plain constructor call does not check the declared types and
        # ranges (msgspec does that only when decoding): check them here, so
        # every Settings is valid whichever way it was built.
        for name, type_ in _declared(type(self)):
            value = getattr(self, name)
            try:
                msgspec.convert(value, type_)
            except msgspec.ValidationError as exc:
                raise ValueError(f"{_var(name)}={value!r} is not valid: {exc}") from None
        # normalized once here; msgspec's documented way to finish a frozen struct
        force_setattr(self, "database_url", _normalize_db_url(self.database_url))
        public_url = self.public_url or f"http://{self.host}:{self.port}"
        if not public_url.startswith(("http://", "https://")):
            raise ValueError("AUTHSERVER_PUBLIC_URL must start with http:// or https://")
        force_setattr(self, "public_url", public_url.rstrip("/"))
        try:
            clientaddr.parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ValueError(f"AUTHSERVER_TRUSTED_PROXIES: {exc}") from None
        try:
            parse_nodes(self.xds_nodes)
        except ValueError as exc:
            raise ValueError(f"AUTHSERVER_XDS_NODES: {exc}") from None
        if self.ratelimit_port is not None and self.xds_port is None:
            raise ValueError("AUTHSERVER_RATELIMIT_PORT needs AUTHSERVER_XDS_PORT (the gateway services)")
        tls = (self.xds_tls_cert, self.xds_tls_key, self.xds_tls_client_ca)
        if any(tls) and not all(tls):
            raise ValueError("AUTHSERVER_XDS_TLS_CERT, _KEY and _CLIENT_CA go together (TLS with client certificates)")
        if self.portal_secret is not None and len(self.portal_secret) < 16:
            raise ValueError("AUTHSERVER_PORTAL_SECRET must be at least 16 characters")
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise ValueError("AUTHSERVER_METRICS_TOKEN must be at least 16 characters")
        if self.webhook_key and self.webhook_key_file:
            raise ValueError("set AUTHSERVER_WEBHOOK_KEY or AUTHSERVER_WEBHOOK_KEY_FILE, not both")
        if self.webhook_lease_seconds <= self.webhook_timeout_seconds:
            raise ValueError("AUTHSERVER_WEBHOOK_LEASE_SECONDS must exceed AUTHSERVER_WEBHOOK_TIMEOUT_SECONDS")
        unknown = [a for a in (self.default_algorithm, *self.pool_algorithms) if a not in keys.supported_algorithms()]
        if unknown:
            raise ValueError(f"unknown algorithm(s) {unknown}; known: {list(keys.supported_algorithms())}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``AUTHSERVER_*`` variables (unset or empty: the
        default); ``overrides`` (typed values) win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in _inspected(cls).fields:
            raw = env.get(_var(field.name))
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(field.name, field.type, raw)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with ``changes``."""
        return msgspec.structs.replace(self, **changes)

    @property
    def base_url(self) -> str:
        assert self.public_url is not None  # always set by __post_init__
        return self.public_url

    @property
    def pool_algorithms(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.mint_pool_algorithms.split(",") if a.strip())

    @property
    def trusted_proxy_networks(self) -> tuple[clientaddr.Network, ...]:
        return clientaddr.parse_networks(self.trusted_proxies)  # parsed once (cached)

    @property
    def xds_node_tenants(self) -> dict[str, str]:
        return parse_nodes(self.xds_nodes)

    @property
    def xds_tls(self) -> bool:
        return self.xds_tls_cert is not None

    @property
    def push_window_seconds(self) -> float:
        """How long a removal is pushed to gateways: until their cached JWKS
        surely lacks it (one cache period, twice for a failed refresh, plus a
        minute: failing here would let a revoked key in). 0 without xDS."""
        return 0.0 if self.xds_port is None else 2.0 * self.gateway_cache_seconds + 60.0

    @property
    def recent_window_seconds(self) -> float:
        """How long a new key is pushed: until the gateways' next JWKS refresh
        has it (one cache period plus a minute for the fetch and its retries)."""
        return 0.0 if self.xds_port is None else self.gateway_cache_seconds + 60.0

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@functools.cache
def _declared(cls: type[Settings]) -> tuple[tuple[str, Any], ...]:
    """Each field's name and declared type (with its Meta range), resolved once."""
    return tuple((f.name, f.type) for f in msgspec.structs.fields(cls))


@functools.cache
def _inspected(cls: type[Settings]) -> msgspec.inspect.StructType:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return info


def _parse(name: str, type_: msgspec.inspect.Type, raw: str) -> Any:
    """One environment string as its field's type (its range checked later)."""
    text: Any = raw
    if isinstance(type_, msgspec.inspect.BoolType):
        lowered = raw.strip().lower()
        # msgspec takes true/false/1/0; we also take yes/no/on/off, as always
        text = True if lowered in _TRUE else False if lowered in _FALSE else raw
    elif isinstance(type_, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        text = raw.strip()
        if name.endswith("_seconds") and text[-1:].isalpha():  # 1h, 30d: durations.py
            try:
                text = parse_duration(text)
            except ValueError as exc:
                raise ValueError(f"{_var(name)}={raw!r} is not valid: {exc}") from None
    try:
        return msgspec.convert(text, _plain(type_), strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{_var(name)}={raw!r} is not valid: {exc}") from None


def _plain(type_: msgspec.inspect.Type) -> Any:
    """The Python type to parse a string into; ranges are left to __post_init__."""
    if isinstance(type_, msgspec.inspect.UnionType):  # X | None: parse as X
        (type_,) = [t for t in type_.types if not isinstance(t, msgspec.inspect.NoneType)] or [type_]
    if isinstance(type_, msgspec.inspect.BoolType):
        return bool
    if isinstance(type_, msgspec.inspect.IntType):
        return int
    if isinstance(type_, msgspec.inspect.FloatType):
        return float
    return str
