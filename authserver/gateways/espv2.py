"""Google ESPv2 (Cloud Endpoints / API Gateway): OpenAPI 2.0 securityDefinitions
for our keys, and the ESPv2 flags they need.

ESPv2 builds an Envoy ``jwt_authn`` config from these, so the same facts hold:
- ``x-google-jwt-locations`` with ``value_prefix: "Bearer sk_live_"`` makes
  ESPv2 strip our prefix (and ignore its default locations).
- ``--jwt_cache_size=0``: ESPv2 >= 2.40 turns Envoy's JWT cache on with 1000
  entries; a cached token stays valid until its ``exp`` even after revocation.
- ``--jwks_cache_duration_in_s=N``: ESPv2 does not refetch on an unknown kid;
  a new key works, and a revoked key stops working, after at most N seconds
  (ESPv2 default 300).
ESPv2 always forwards the Authorization header (the key) to the backend, adds
the verified payload as base64url JSON in ``X-Endpoint-API-UserInfo`` and does
not check scopes: the backend must check ``scope`` itself.
"""

from __future__ import annotations

from typing import Any

from .common import endpoint_of, jwks_uri, shard_ids, shard_prefix

__all__ = ["espv2_config", "espv2_flags", "security_definition_name"]


def security_definition_name(tenant_id: str, shard: int | None = None) -> str:
    return f"authserver_{tenant_id}" if shard is None else f"authserver_{tenant_id}_s{shard}"


def espv2_flags(settings: Any, cache_duration: int | None = None) -> list[str]:
    seconds = int(cache_duration or settings.gateway_cache_seconds)
    return ["--jwt_cache_size=0", f"--jwks_cache_duration_in_s={seconds}"]


def espv2_config(tenant: Any, settings: Any, *, authserver_url: str | None = None) -> dict[str, Any]:
    """``securityDefinitions`` and ``security`` to merge into an OpenAPI 2.0
    document. A sharded tenant gets one definition per shard, any of which
    may authenticate a request (a key matches exactly one by its prefix)."""
    server = endpoint_of(authserver_url or settings.public_url or f"http://{settings.host}:{settings.port}")
    definitions: dict[str, Any] = {}
    for shard in shard_ids(tenant):
        definitions[security_definition_name(tenant.id, shard)] = {
            "authorizationUrl": "",
            "flow": "implicit",
            "type": "oauth2",
            "x-google-issuer": tenant.issuer,
            "x-google-jwks_uri": jwks_uri(server.base, tenant.id, shard),
            "x-google-audiences": tenant.audience,
            "x-google-jwt-locations": [
                {"header": "Authorization", "value_prefix": f"Bearer {shard_prefix(tenant, shard)}"},
            ],
        }
    return {
        "securityDefinitions": definitions,
        "security": [{name: []} for name in definitions],
    }
