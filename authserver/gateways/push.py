"""What authserver pushes to Envoy over xDS, as Envoy config (plain dicts).

Envoy validates keys offline against the tenant's JWKS, which it refreshes
only every ``cache_duration``. Pushed extension configs (ECDS) fill that gap,
each holding a slice of one window of changes, never the tenant's keys:

- ``recent`` (``jwt_authn`` filters): the keys published within the recent
  window, as ``local_jwks``, so a new key works at its first call. One
  provider per shard that has recent keys, picked by the key prefix.
- ``removed`` (RBAC filters): DENY the key ids removed within the push
  window: an exact-match map on ``x-api-key-id`` (set from the verified
  payload), one hash lookup per filter whatever the number of removals.

Each kind is split into time buckets (a key goes to the bucket of its
publication or removal time), so one change re-sends one bucket: a few
minutes of changes, not the whole window. A static RBAC filter (``verified``)
lets a request through only if one of the ``jwt_authn`` filters verified its
key. Denials of both RBAC kinds are named ``gate_*``; the bootstrap's local
reply config answers them with our 401 (a scope denial stays a 403).

The same builders give the ``default_config`` written into the bootstrap, so
what Envoy runs before its first push and what it is pushed cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from .common import shard_prefix

__all__ = [
    "GATE_DENIAL_PREFIX",
    "JWT_TYPE",
    "KID_HEADER",
    "PAYLOAD_METADATA_KEY",
    "RBAC_TYPE",
    "RECENT_BUCKETS",
    "REMOVED_BUCKETS",
    "bucket_of",
    "recent_config",
    "recent_name",
    "removed_config",
    "removed_name",
    "resource_names",
    "verified_config",
]

JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
# Filters in every pushed chain: fixed, so a bootstrap stays valid whatever the
# settings; the bucket length follows the window (see bucket_of). More removal
# buckets: smaller pushes under a stream of revocations, for ~0.5 us a request each.
RECENT_BUCKETS = 3
REMOVED_BUCKETS = 10
# RBAC action names of the gate's denials (Envoy reports
# "rbac_access_denied_matched_policy[<name>]"): answered with our 401
GATE_DENIAL_PREFIX = "gate_"
PAYLOAD_METADATA_KEY = "jwt_payload"
# the verified key id, set from the jwt_authn payload before the gate runs
# (client copies are removed first); also forwarded to the upstream
KID_HEADER = "x-api-key-id"


def recent_name(tenant_id: str, bucket: int) -> str:
    """The ECDS resource (and HTTP filter) name of one bucket of a tenant's recent keys."""
    return f"authserver.recent.{tenant_id}.{bucket}"


def removed_name(tenant_id: str, bucket: int) -> str:
    """The ECDS resource (and HTTP filter) name of one bucket of a tenant's removals."""
    return f"authserver.removed.{tenant_id}.{bucket}"


def resource_names(tenant_id: str) -> list[str]:
    """Every resource a gateway of this tenant subscribes to."""
    return ([recent_name(tenant_id, b) for b in range(RECENT_BUCKETS)]
            + [removed_name(tenant_id, b) for b in range(REMOVED_BUCKETS)])


def bucket_of(at: float, window: float, buckets: int) -> int:
    """The bucket of an event at ``at`` (UNIX seconds): buckets of
    window / (buckets - 1) seconds taken in turn, so a bucket comes round again
    only after everything in it has aged out of the window."""
    length = max(1.0, window / (buckets - 1))
    return int(at // length) % buckets


def recent_config(tenant: Any, recent: Iterable[tuple[int | None, dict[str, Any]]]) -> dict[str, Any]:
    """A ``jwt_authn`` config verifying only the given keys: ``(shard, public JWK)``.

    Every requirement allows missing or failed tokens: the verified gate decides. Shard
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


def removed_config(removed: Sequence[str]) -> dict[str, Any]:
    """An RBAC config: DENY these key ids (exact map), ALLOW anything else."""
    allow = _action("not_removed", "ALLOW")
    if not removed:
        return {"@type": RBAC_TYPE, "matcher": {"on_no_match": allow}}
    return {"@type": RBAC_TYPE, "matcher": {
        "matcher_tree": {"input": _KID_INPUT, "exact_match_map": {
            "map": {kid: _action(f"{GATE_DENIAL_PREFIX}removed", "DENY") for kid in removed},
        }},
        "on_no_match": allow,
    }}


def verified_config() -> dict[str, Any]:
    """An RBAC config: ALLOW a request whose key a jwt_authn filter verified
    (``x-api-key-id`` was set from its payload), DENY anything else."""
    return {"@type": RBAC_TYPE, "matcher": {
        "matcher_list": {"matchers": [{
            "predicate": {"single_predicate": {
                "input": _KID_INPUT, "value_match": {"safe_regex": {"google_re2": {}, "regex": ".+"}},
            }},
            "on_match": _action("verified", "ALLOW"),
        }]},
        "on_no_match": _action(f"{GATE_DENIAL_PREFIX}unverified", "DENY"),
    }}
