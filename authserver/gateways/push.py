"""What authserver pushes to Envoy over xDS, as Envoy config (plain dicts).

Envoy validates keys offline against the tenant's JWKS, which it refreshes
only every ``cache_duration``. Two extension configs (ECDS) fill that gap, each
sized by one window of changes, never by the tenant's total keys:

- ``recent`` (a ``jwt_authn`` filter): the keys published within the window,
  as ``local_jwks``, so a new key works at its first call. One provider per
  shard that has recent keys, picked by the key prefix in a header rule.
- ``gate`` (an RBAC filter): lets a request through only if one of the two
  ``jwt_authn`` filters verified its key (its ``jti`` is in ``x-api-key-id``,
  set from the verified payload) and that key was not removed within the
  window: one hash lookup, whatever the number of revocations.

The same builders give the ``default_config`` written into the bootstrap, so
what Envoy runs before its first push and what it is pushed cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from .common import shard_prefix

__all__ = [
    "GATE_TYPE",
    "JWT_TYPE",
    "KID_HEADER",
    "PAYLOAD_METADATA_KEY",
    "gate_config",
    "gate_name",
    "recent_config",
    "recent_name",
]

JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
GATE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
PAYLOAD_METADATA_KEY = "jwt_payload"
# the verified key id, set from the jwt_authn payload before the gate runs
# (client copies are removed first); also forwarded to the upstream
KID_HEADER = "x-api-key-id"


def recent_name(tenant_id: str) -> str:
    """The ECDS resource (and HTTP filter) name of a tenant's recent keys."""
    return f"authserver.recent.{tenant_id}"


def gate_name(tenant_id: str) -> str:
    """The ECDS resource (and HTTP filter) name of a tenant's gate."""
    return f"authserver.gate.{tenant_id}"


def recent_config(tenant: Any, recent: Iterable[tuple[int | None, dict[str, Any]]]) -> dict[str, Any]:
    """A ``jwt_authn`` config verifying only the given keys: ``(shard, public JWK)``.

    Every requirement allows missing or failed tokens: the gate decides. Shard
    rules come first, since the main prefix (sk_live_) also begins every shard
    prefix (sk_live_s3_)."""
    by_shard: dict[int | None, list[dict[str, Any]]] = {}
    for shard, jwk in recent:
        by_shard.setdefault(shard, []).append(jwk)
    providers: dict[str, Any] = {}
    rules: list[dict[str, Any]] = []
    for shard in sorted(by_shard, key=lambda s: (s is None, s or 0)):
        name = "recent" if shard is None else f"recent_s{shard}"
        prefix = f"Bearer {shard_prefix(tenant, shard)}"
        providers[name] = {
            "issuer": tenant.issuer,
            "audiences": [tenant.audience],
            # sorted keys: the same bytes on every replica (PostgreSQL JSONB reorders a JWK)
            "local_jwks": {"inline_string": json.dumps({"keys": by_shard[shard]}, separators=(",", ":"),
                                                       sort_keys=True)},
            "from_headers": [{"name": "Authorization", "value_prefix": prefix}],
            "forward": True,  # the route strips the Authorization header
            "payload_in_metadata": PAYLOAD_METADATA_KEY,
        }
        rules.append({
            "match": {"prefix": "/", "headers": [{"name": "authorization", "string_match": {"prefix": prefix}}]},
            "requires": {"requires_any": {"requirements": [
                {"provider_name": name}, {"allow_missing_or_failed": {}},
            ]}},
        })
    config: dict[str, Any] = {"@type": JWT_TYPE}
    if providers:
        config["providers"] = providers
        config["rules"] = rules
    return config


def _action(name: str, action: str) -> dict[str, Any]:
    return {"action": {"name": name, "typed_config": {
        "@type": "type.googleapis.com/envoy.config.rbac.v3.Action", "name": name, "action": action,
    }}}


_KID_INPUT = {"name": "kid", "typed_config": {
    "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput", "header_name": KID_HEADER,
}}


def gate_config(removed: Sequence[str]) -> dict[str, Any]:
    """An RBAC config: DENY a removed key id (exact map), ALLOW a verified
    key, DENY anything else.

    The same matcher runs as shadow: its ``shadow_engine_result: denied`` in
    the RBAC metadata is what the bootstrap's local reply config turns into
    our 401 body (a plain RBAC denial is a 403, kept for scopes)."""
    verified: dict[str, Any] = {
        "matcher_list": {"matchers": [{
            "predicate": {"single_predicate": {
                "input": _KID_INPUT, "value_match": {"safe_regex": {"google_re2": {}, "regex": ".+"}},
            }},
            "on_match": _action("verified", "ALLOW"),
        }]},
        "on_no_match": _action("unverified", "DENY"),
    }
    matcher = verified
    if removed:
        matcher = {
            "matcher_tree": {"input": _KID_INPUT, "exact_match_map": {
                "map": {kid: _action("removed", "DENY") for kid in removed},
            }},
            "on_no_match": {"matcher": verified},
        }
    return {"@type": GATE_TYPE, "matcher": matcher, "shadow_matcher": matcher}
