"""All configuration, read once from the environment into one typed object.

Every variable is ``AUTHSERVER_<FIELD>`` (upper case). Nothing else in the
service reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

__all__ = ["Settings"]

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./authserver.db"


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


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_SQLITE_URL
    redis_url: str | None = None
    # prefix of every Redis key and channel, so several deployments can share one Redis
    redis_namespace: str = "authserver"
    # the base URL clients and gateways use; default http://{host}:{port}
    public_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    # How long gateways cache the JWKS (Envoy remote_jwks cache_duration): a new
    # key works at the gateway after at most this long; used in mint answers
    # and generated gateway configs.
    gateway_cache_seconds: int = 300
    # HTTP Cache-Control max-age on JWKS responses (for proxies and clients).
    jwks_max_age_seconds: int = 60
    default_grace_seconds: int = 86400
    max_grace_seconds: int = 30 * 86400
    max_body_bytes: int = 64 * 1024
    default_algorithm: str = "RS256"
    default_tenant: str = "default"
    page_size_max: int = 500
    # worker threads for key generation (RSA-2048 ~35 ms of CPU each)
    keygen_threads: int = 2
    # Fast mint (opt-in): pre-generated keypairs kept in memory only, never written.
    mint_pool_size: int = 0
    mint_pool_algorithms: str = "RS256"  # comma-separated
    mint_pool_max_age_seconds: float = 3600.0
    # Instant activation (opt-in): publish public halves of pooled keypairs per
    # tenant before issuing them, so a key works at a gateway's first call.
    instant_activation: bool = False
    instant_activation_pool_size: int = 32
    instant_activation_max_age_seconds: float = 6 * 3600.0
    log_level: str = "INFO"
    log_json: bool = True
    # Redis: local caches are trusted this long without an invalidation channel
    degraded_cache_ttl_seconds: float = 2.0
    # rate limits (requests per window); 0 disables one
    rate_limit_admin_per_minute: int = 600
    rate_limit_introspect_per_minute: int = 6000
    rate_limit_auth_failures_per_minute: int = 30
    run_migrations: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"AUTHSERVER_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.name, f.type, raw)
        values.update(overrides)
        return cls(**values).validated()

    @property
    def base_url(self) -> str:
        assert self.public_url is not None  # set by validated()
        return self.public_url

    def validated(self) -> "Settings":
        s = dataclasses.replace(
            self,
            database_url=_normalize_db_url(self.database_url),
            public_url=self.public_url or f"http://{self.host}:{self.port}",
        )
        if not s.public_url.startswith(("http://", "https://")):
            raise ValueError("AUTHSERVER_PUBLIC_URL must start with http:// or https://")
        object.__setattr__(s, "public_url", s.public_url.rstrip("/"))
        import keys  # the algorithm registry; keys/ has no heavy imports

        unknown = [a for a in (s.default_algorithm, *s.pool_algorithms) if a not in keys.supported_algorithms()]
        if unknown:
            raise ValueError(f"unknown algorithm(s) {unknown}; known: {list(keys.supported_algorithms())}")
        if s.gateway_cache_seconds < 1 or s.max_body_bytes < 1024:
            raise ValueError("gateway_cache_seconds >= 1 and max_body_bytes >= 1024")
        return s

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes).validated()

    @property
    def pool_algorithms(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.mint_pool_algorithms.split(",") if a.strip())

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _coerce(name: str, type_: Any, raw: str) -> Any:
    t = str(type_)
    try:
        if t.startswith("int"):
            return int(raw)
        if t.startswith("float"):
            return float(raw)
        if t.startswith("bool"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError:
        raise ValueError(f"AUTHSERVER_{name.upper()}={raw!r} is not a valid {t}") from None
    return raw
