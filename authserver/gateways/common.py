"""What every gateway config needs: where the JWKS is, who the tenant is,
and small parsers for the command line values."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "HostPort",
    "ScopeRule",
    "Endpoint",
    "parse_hostport",
    "parse_scope_rule",
    "RouteCost",
    "parse_route_cost",
    "endpoint_of",
    "jwks_uri",
    "shard_ids",
    "shard_prefix",
]


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
            return True
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_hostport(value: str, *, what: str = "address") -> HostPort:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> HostPort; ValueError if not."""
    value = (value or "").strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = value.rpartition(":")
    if not host or not port.isdigit() or not (0 < int(port) < 65536):
        raise ValueError(f"{what} must be HOST:PORT, got {value!r}")
    return HostPort(host, int(port))


@dataclass(frozen=True, slots=True)
class ScopeRule:
    """Requests whose path starts with ``prefix`` need ``scope`` in the key."""

    prefix: str
    scope: str


def parse_scope_rule(value: str) -> ScopeRule:
    """``/path/prefix=scope`` -> ScopeRule; ValueError if not."""
    prefix, sep, scope = (value or "").partition("=")
    prefix, scope = prefix.strip(), scope.strip()
    if not sep or not prefix.startswith("/") or not scope:
        raise ValueError(f"--require-scope wants PATH_PREFIX=SCOPE with PATH_PREFIX starting with '/', got {value!r}")
    if any(c.isspace() or c in '"\\' for c in scope) or not scope.isprintable():
        raise ValueError(f"a scope has no spaces, quotes or backslashes: {scope!r}")
    return ScopeRule(prefix, scope)


@dataclass(frozen=True, slots=True)
class RouteCost:
    """A call whose path starts with ``prefix`` counts ``cost`` against the
    key's rate limits and credits (every other call counts 1)."""

    prefix: str
    cost: int


MAX_ROUTE_COST = 1_000_000


def parse_route_cost(value: str) -> RouteCost:
    """``/path/prefix=N`` -> RouteCost; ValueError if not."""
    prefix, sep, cost = (value or "").partition("=")
    prefix, cost = prefix.strip(), cost.strip()
    if not sep or not prefix.startswith("/") or not cost.isdigit() or not 1 <= int(cost) <= MAX_ROUTE_COST:
        raise ValueError(f"--route-cost wants PATH_PREFIX=N with PATH_PREFIX starting with '/' and N from 1 "
                         f"to {MAX_ROUTE_COST}, got {value!r}")
    if any(c.isspace() or c in '"\\' for c in prefix) or not prefix.isprintable():
        raise ValueError(f"a path prefix has no spaces, quotes or backslashes: {prefix!r}")
    return RouteCost(prefix, int(cost))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The authorization server as a gateway reaches it."""

    scheme: str
    host: str
    port: int
    base: str  # scheme://host[:port][/path], no trailing slash

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def hostport(self) -> HostPort:
        return HostPort(self.host, self.port)


def endpoint_of(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the authorization server URL must be http(s)://host[:port][/path], got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Endpoint(parts.scheme, parts.hostname, port, url.rstrip("/"))


def shard_ids(tenant: Any) -> list[int | None]:
    """None (the tenant's main JWKS) and one id per JWKS shard."""
    count = int(getattr(tenant, "shard_count", 1) or 1)
    return [None, *range(count)] if count > 1 else [None]


def shard_prefix(tenant: Any, shard: int | None) -> str:
    """Key prefix of one shard (sk_live_s3_), as keycache.TenantInfo.shard_prefix."""
    return tenant.key_prefix if shard is None else f"{tenant.key_prefix}s{shard}_"


def jwks_uri(base_url: str, tenant_id: str, shard: int | None = None) -> str:
    base = base_url.rstrip("/")
    if shard is None:
        return f"{base}/t/{tenant_id}/.well-known/jwks.json"
    return f"{base}/t/{tenant_id}/shards/{shard}/jwks.json"
