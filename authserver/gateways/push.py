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

- ``expiring`` (one composite filter): the keys in a roll's grace period,
  an exact-match map on ``x-api-key-id`` whose entry runs a header mutation
  adding ``X-API-Key-Expiring: <RFC 3339 time>`` to the response, so callers
  still on the old key hear when it stops working. The set is small (keys
  rolled within one grace period), so it is one resource, not buckets.

The same builders give the ``default_config`` written into the bootstrap, so
what Envoy runs before its first push and what it is pushed cannot drift.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .common import shard_prefix

__all__ = [
    "EXPIRING_HEADER",
    "GATE_DENIAL_PREFIX",
    "JWT_TYPE",
    "KID_HEADER",
    "PAYLOAD_METADATA_KEY",
    "MATCH_TYPE",
    "RBAC_TYPE",
    "RECENT_BUCKETS",
    "REMOVED_BUCKETS",
    "bucket_of",
    "expiring_config",
    "expiring_name",
    "recent_config",
    "recent_name",
    "removed_config",
    "removed_name",
    "resource_names",
    "rfc3339",
    "verified_config",
]

JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
# a filter wrapped with a matcher (the composite filter's configuration)
MATCH_TYPE = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"
# on responses to a call made with a key in a roll's grace period: when the key stops working
EXPIRING_HEADER = "x-api-key-expiring"
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


def expiring_name(tenant_id: str) -> str:
    """The ECDS resource (and HTTP filter) name of a tenant's keys in a roll's grace period."""
    return f"authserver.expiring.{tenant_id}"


def resource_names(tenant_id: str) -> list[str]:
    """Every resource a gateway of this tenant subscribes to."""
    return ([recent_name(tenant_id, b) for b in range(RECENT_BUCKETS)]
            + [removed_name(tenant_id, b) for b in range(REMOVED_BUCKETS)] + [expiring_name(tenant_id)])


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


def rfc3339(ts: int) -> str:
    """UNIX seconds as an RFC 3339 UTC time, e.g. 2026-12-02T10:00:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _execute(response_mutations: list[dict[str, Any]]) -> dict[str, Any]:
    """A composite action: run a header mutation filter with these response mutations."""
    return {"action": {"name": "expiring", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction",
        "typed_config": {"name": "expiring", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"response_mutations": response_mutations},
        }},
    }}}


def _add_header(value: str) -> dict[str, Any]:
    return _execute([{"append": {"header": {"key": EXPIRING_HEADER, "value": value},
                                 "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}])


def expiring_config(expiring: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """A composite filter: for a call whose verified key id is one of these
    ``(key id, end of its grace)``, the response gets ``X-API-Key-Expiring``.
    With none, one entry that never matches (a map needs one; no key id is empty) and adds nothing."""
    entries = {kid: _add_header(rfc3339(until)) for kid, until in expiring}
    return {"@type": MATCH_TYPE,
            "extension_config": {"name": "composite", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite"}},
            "xds_matcher": {"matcher_tree": {"input": _KID_INPUT, "exact_match_map": {
                "map": entries or {"": _execute([])},
            }}}}
