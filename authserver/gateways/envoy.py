"""An Envoy bootstrap that checks our API keys offline with ``jwt_authn``.

listener -> http_connection_manager -> jwt_authn -> [rbac: scopes] -> router -> upstream

Why each setting is what it is (measured with Envoy 1.40; deploy/envoy/README.md,
"What is in the config, and why", says more):

- ``from_headers`` with ``value_prefix: "Bearer <tenant prefix>"``: Envoy cuts
  the prefix off, so it sees the bare JWT; a key with another prefix (an admin
  key ``sk_admin_...``, another environment) is not even extracted and gets 401.
  A sharded tenant gets one provider per shard (``Bearer sk_live_s3_``) and
  one route per shard that names its provider, picked by a longest-prefix
  matcher on the Authorization header, so each key is checked against
  exactly one small JWKS and finding it costs one lookup, not a scan.
- No ``jwt_cache_config``: Envoy's JWT cache keeps a verified token valid until
  its ``exp`` even after its key left the JWKS, i.e. revocation would not work.
- ``remote_jwks.cache_duration``: Envoy does NOT refetch on an unknown kid;
  a new key works after the next refresh, a revoked one fails after it.
- ``async_fetch`` (``fast_listener: false``): the JWKS is fetched before the
  listener opens and refreshed in the background every ``cache_duration``; a
  failed fetch keeps the previous set (our JWKS is never empty: a sentinel key).
- ``forward: false``: the upstream never sees the API key; it gets
  ``x-api-key-subject`` (sub), ``x-api-key-scope`` (scope), ``x-api-key-id``
  (jti = kid). jwt_authn removes client-sent copies of those headers first.
  (Sharded, the virtual host does it from the payload metadata: see below.)
- Scopes: jwt_authn writes the payload to dynamic metadata; one RBAC filter
  (action DENY) refuses with 403 a request under a protected path prefix whose
  space-separated ``scope`` claim lacks the scope. Several matching prefixes
  must all be satisfied.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import push
from .common import (
    HostPort,
    RouteCost,
    ScopeRule,
    endpoint_of,
    jwks_uri,
    parse_hostport,
    shard_ids,
    shard_prefix,
)

__all__ = [
    "CLAIM_HEADERS", "PAYLOAD_METADATA_KEY", "XdsTls",
    "envoy_config", "node_id_of", "provider_name", "routes_of", "scope_regex",
]

JWT_FILTER = "envoy.filters.http.jwt_authn"
RATELIMIT_FILTER = "envoy.filters.http.ratelimit"
PAYLOAD_METADATA_KEY = push.PAYLOAD_METADATA_KEY
# claim -> request header for the upstream
CLAIM_HEADERS = (("sub", "x-api-key-subject"), ("scope", "x-api-key-scope"), ("jti", push.KID_HEADER))
XDS_CLUSTER = "authserver_xds"
RATELIMIT_CLUSTER = "authserver_ratelimit"
ACCESSLOG_CLUSTER = "authserver_accesslog"
DEFAULT_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"

_RE2_META = set("\\.+*?()|[]{}^$")


def scope_regex(scope: str) -> str:
    """RE2 pattern matching a space-separated scope string that holds ``scope``.

    Envoy's ``safe_regex`` string matcher must match the WHOLE value, so the
    pattern spells out the optional neighbours: ``^(.* )?SCOPE( .*)?$``."""
    escaped = "".join("\\" + c if c in _RE2_META else c for c in scope)
    return f"^(.* )?{escaped}( .*)?$"


def node_id_of(tenant_id: str) -> str:
    """The node id a generated config gives Envoy (``--node-id`` overrides it)."""
    return f"authserver-gateway-{tenant_id}"


def provider_name(tenant_id: str, shard: int | None = None) -> str:
    return f"authserver_{tenant_id}" if shard is None else f"authserver_{tenant_id}_s{shard}"


def routes_of(virtual_host: dict[str, Any]) -> list[dict[str, Any]]:
    """Every route of a virtual host of ours, in a list or in its shard matcher
    (the shard routes first, the default route last); the dicts are the
    config's own, so changing one changes the config."""
    if "routes" in virtual_host:
        routes: list[dict[str, Any]] = virtual_host["routes"]
        return routes
    m = virtual_host["matcher"]
    actions = ([e["action"]["typed_config"] for e in m["matcher_tree"]["prefix_match_map"]["map"].values()]
               + [m["on_no_match"]["action"]["typed_config"]])
    # an action is one route, or a RouteList (the cost routes, then the default)
    return [r for a in actions for r in (a["routes"] if "routes" in a else [a])]


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _socket_address(hp: HostPort) -> dict[str, Any]:
    return {"socket_address": {"address": hp.host, "port_value": hp.port}}


def _cluster(name: str, hp: HostPort, *, tls_sni: str | None = None, ca_file: str = DEFAULT_CA_FILE,
             connect_timeout: float = 2.0) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if hp.is_ip else "STRICT_DNS",
        "connect_timeout": _duration(connect_timeout),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(hp)}}]}],
        },
    }
    if not hp.is_ip:
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if tls_sni is not None:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": tls_sni,
                "common_tls_context": {
                    "validation_context": {
                        "trusted_ca": {"filename": ca_file},
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": tls_sni}},
                        ],
                    },
                },
            },
        }
    return cluster


def _provider(tenant: Any, shard: int | None, uri: str, cluster: str, cache_duration: int) -> dict[str, Any]:
    return {
        "issuer": tenant.issuer,
        "audiences": [tenant.audience],
        "remote_jwks": {
            "http_uri": {"uri": uri, "cluster": cluster, "timeout": "5s"},
            "cache_duration": _duration(cache_duration),
            # fetch before the listener opens, then refresh in the background
            "async_fetch": {"fast_listener": False, "failed_refetch_duration": "1s"},
            "retry_policy": {
                "num_retries": 3,
                "retry_back_off": {"base_interval": "0.2s", "max_interval": "2s"},
            },
        },
        # the key string is "<prefix><JWT>": Envoy strips "Bearer <prefix>"
        "from_headers": [{"name": "Authorization", "value_prefix": f"Bearer {shard_prefix(tenant, shard)}"}],
        "forward": False,
        "claim_to_headers": [{"claim_name": c, "header_name": h} for c, h in CLAIM_HEADERS],
        "payload_in_metadata": PAYLOAD_METADATA_KEY,
        # no jwt_cache_config: a cached token would outlive its revocation
    }


@dataclass(frozen=True, slots=True)
class XdsTls:
    """Files Envoy uses to reach the control plane over TLS with a client certificate."""

    ca_file: str
    cert_file: str
    key_file: str
    server_name: str | None = None  # the name in authserver's certificate (default: the --xds host)


def _with_push(provider: dict[str, Any]) -> dict[str, Any]:
    """A remote-JWKS provider as it runs beside the pushed filters: the claim
    headers come from the header mutation filter, and the key stays in the
    request for the ``recent`` filter (the route strips it)."""
    provider.pop("claim_to_headers", None)
    provider["forward"] = True
    return provider


def _allow_failed(requirement: dict[str, Any]) -> dict[str, Any]:
    """With push, a key this filter cannot verify may be a recent one: the gate decides."""
    return {"requires_any": {"requirements": [requirement, {"allow_missing_or_failed": {}}]}}


def _claims_filter() -> dict[str, Any]:
    """Sets the claim headers from the verified payload, whichever jwt_authn
    filter verified it, after removing client copies. The gate reads one of them."""
    mutations: list[dict[str, Any]] = [{"remove": header} for _, header in CLAIM_HEADERS]
    mutations += [{"append": {
        "header": {"key": header, "value": f"%DYNAMIC_METADATA({JWT_FILTER}:{PAYLOAD_METADATA_KEY}:{claim})%"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }} for claim, header in CLAIM_HEADERS]
    return {
        "name": "authserver.claims",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": mutations},
        },
    }


def _pushed_filter(name: str, type_url: str, default: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "config_discovery": {
        "config_source": {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "5s"},
        # what runs until the first push (and if authserver is never reached):
        # no recent keys, no removals
        "default_config": default,
        "type_urls": [type_url],
    }}


def _grpc_cluster(name: str, endpoints: Sequence[HostPort], tls: XdsTls | None) -> dict[str, Any]:
    """An HTTP/2 cluster to authserver's gRPC port (xDS, rate limits)."""
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if all(hp.is_ip for hp in endpoints) else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {
                # keep the stream alive through idle NATs; notice a dead control plane
                "connection_keepalive": {"interval": "10s", "timeout": "5s"},
            }},
        }},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(hp)}} for hp in endpoints]}],
        },
    }
    if cluster["type"] == "STRICT_DNS":
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if tls is not None:
        sni = tls.server_name or endpoints[0].host
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": sni,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificates": [{
                        "certificate_chain": {"filename": tls.cert_file},
                        "private_key": {"filename": tls.key_file},
                    }],
                    "validation_context": {
                        "trusted_ca": {"filename": tls.ca_file},
                        "match_typed_subject_alt_names": [
                            {"san_type": "IP_ADDRESS" if HostPort(sni, 1).is_ip else "DNS", "matcher": {"exact": sni}},
                        ],
                    },
                },
            },
        }
    return cluster


def _ratelimit_actions(tenant_id: str) -> list[dict[str, Any]]:
    """The descriptor Envoy sends per request: the tenant and the verified key id."""
    return [
        {"generic_key": {"descriptor_key": "tenant", "descriptor_value": tenant_id}},
        # the verified key id (no verified key: no descriptor, no call)
        {"metadata": {"descriptor_key": "key_id", "source": "DYNAMIC", "metadata_key": {
            "key": JWT_FILTER, "path": [{"key": PAYLOAD_METADATA_KEY}, {"key": "jti"}]}}},
    ]


def _routes(route_costs: Sequence[RouteCost], tenant_id: str, per_route: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The routes to the upstream: one per priced prefix (longest first, so the
    most specific wins), each with the ratelimit filter's per-route descriptor
    that counts ``hits_addend`` (it replaces the virtual host's rate_limits;
    Envoy 1.40 sends hits_addend from this config, not from a RouteAction's
    rate_limits), then the default route. Fresh dicts each time: no shared
    (YAML-aliased) parts."""
    routes: list[dict[str, Any]] = []
    for rc in sorted(route_costs, key=lambda r: (-len(r.prefix), r.prefix)):
        routes.append({"match": {"prefix": rc.prefix}, "route": {"cluster": "upstream"},
                       "typed_per_filter_config": {RATELIMIT_FILTER: {
                           "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
                           "rate_limits": [{"actions": _ratelimit_actions(tenant_id),
                                            "hits_addend": {"number": rc.cost}}],
                       }}})
    routes.append({"match": {"prefix": "/"}, "route": {"cluster": "upstream"}})
    if per_route is not None:
        for r in routes:
            r.setdefault("typed_per_filter_config", {})[JWT_FILTER] = dict(per_route)
    return routes


def _route_action(name: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    """A shard matcher's action: its one route, or all of them (a RouteList)."""
    if len(routes) == 1:
        return {"name": name, "typed_config": {"@type": "type.googleapis.com/envoy.config.route.v3.Route",
                                               **routes[0]}}
    return {"name": name, "typed_config": {"@type": "type.googleapis.com/envoy.config.route.v3.RouteList",
                                           "routes": routes}}


def _ratelimit_filter(deny: bool) -> dict[str, Any]:
    return {
        "name": RATELIMIT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": "authserver",  # gateways.ratelimit.DOMAIN
            # authserver down: traffic keeps flowing (validation is offline anyway)
            "failure_mode_deny": deny,
            "timeout": "0.05s",
            "rate_limit_service": {
                "grpc_service": {"envoy_grpc": {"cluster_name": RATELIMIT_CLUSTER}},
                "transport_api_version": "V3",
            },
        },
    }


def _accesslog(log_name: str) -> dict[str, Any]:
    """Calls with a verified key, streamed to authserver's access-log service
    (the payload's jti and the status are what it reads; no request headers)."""
    return {
        "name": "envoy.access_loggers.http_grpc",
        "filter": {"metadata_filter": {"matcher": {
            "filter": JWT_FILTER, "path": [{"key": PAYLOAD_METADATA_KEY}, {"key": "jti"}],
            "value": {"present_match": True},
        }}},
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {
                "log_name": log_name,
                "grpc_service": {"envoy_grpc": {"cluster_name": ACCESSLOG_CLUSTER}},
                "transport_api_version": "V3",
                "buffer_flush_interval": "0.5s",
            },
        },
    }


def _rbac_filter(rules: Iterable[ScopeRule]) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    for i, rule in enumerate(rules):
        policies[f"scope_{i}_{rule.scope}"[:120]] = {
            "permissions": [{"url_path": {"path": {"prefix": rule.prefix}}}],
            "principals": [{
                "not_id": {
                    "sourced_metadata": {
                        "metadata_source": "DYNAMIC",
                        "metadata_matcher": {
                            "filter": JWT_FILTER,
                            "path": [{"key": PAYLOAD_METADATA_KEY}, {"key": "scope"}],
                            "value": {"string_match": {"safe_regex": {"regex": scope_regex(rule.scope)}}},
                        },
                    },
                },
            }],
        }
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            # DENY: a request under a protected prefix without the scope gets 403
            "rules": {"action": "DENY", "policies": policies},
        },
    }


def _status_filter(status: int) -> dict[str, Any]:
    return {"status_code_filter": {"comparison": {
        "op": "EQ", "value": {"default_value": status, "runtime_key": f"authserver.local_reply_{status}"},
    }}}


def _problem_mapper(status: int, title: str, code: str) -> dict[str, Any]:
    body = f'{{"type":"https://authserver.dev/problems/{code}","title":"{title}","status":{status},"code":"{code}"}}'
    return {
        "filter": _status_filter(status),
        "body": {"inline_string": body},
        "body_format_override": {
            "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
            "content_type": "application/problem+json",
        },
    }


def _gate_denial_mapper() -> dict[str, Any]:
    """The gate's denials (no verified key, or a removed one) are 403s from RBAC
    filters; their action names tell them from scope denials: answer 401."""
    mapper = _problem_mapper(401, "Missing or invalid credential", "unauthorized")
    denied = f"rbac_access_denied_matched_policy[{push.GATE_DENIAL_PREFIX}"
    mapper["filter"] = {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
        "expression": f"response.code == 403 && response.code_details.startsWith('{denied}')",
    }}}
    mapper["status_code"] = 401
    return mapper


def envoy_config(
    tenant: Any,
    settings: Any,
    *,
    upstream: str | HostPort = "127.0.0.1:9000",
    listen: str | HostPort = "127.0.0.1:10000",
    cache_duration: int | None = None,
    scope_rules: Iterable[ScopeRule] = (),
    admin: str | HostPort | None = None,
    authserver_url: str | None = None,
    ca_file: str = DEFAULT_CA_FILE,
    xds: Sequence[str | HostPort] = (),
    xds_tls: XdsTls | None = None,
    node_id: str | None = None,
    ratelimit: Sequence[str | HostPort] = (),
    ratelimit_deny: bool = False,
    accesslog: Sequence[str | HostPort] = (),
    route_costs: Sequence[RouteCost] = (),
) -> dict[str, Any]:
    """A complete Envoy v3 bootstrap (a dict; dump it as YAML or JSON).

    ``tenant``: a ``keycache.TenantInfo`` (id, issuer, audience, key_prefix,
    shard_count). ``settings``: reads ``gateway_cache_seconds`` and
    ``public_url``. ``authserver_url`` overrides where Envoy fetches the JWKS
    (e.g. an internal address); issuer and audience always come from the tenant.
    ``xds``: authserver's xDS endpoints; with them the config also takes what
    authserver pushes (new keys at once, removals at once; see ``push``),
    and validation stays offline, with the pulled JWKS, when they are down.
    ``ratelimit``: authserver's rate-limit service (the same gRPC port): each
    verified key's limits are enforced here; while it is unreachable traffic
    flows (``ratelimit_deny``: refused instead). ``accesslog``: authserver's
    access-log service: calls with a verified key are reported for usage.
    ``route_costs`` (with ``ratelimit``): calls under a path prefix count N
    against the key's limits and credits instead of 1.
    """
    upstream_hp = upstream if isinstance(upstream, HostPort) else parse_hostport(upstream, what="--upstream")
    listen_hp = listen if isinstance(listen, HostPort) else parse_hostport(listen, what="--listen")
    admin_hp = admin if isinstance(admin, HostPort) or admin is None else parse_hostport(admin, what="--admin")
    xds_hps = [hp if isinstance(hp, HostPort) else parse_hostport(hp, what="--xds") for hp in xds]
    rl_hps = [hp if isinstance(hp, HostPort) else parse_hostport(hp, what="--ratelimit") for hp in ratelimit]
    al_hps = [hp if isinstance(hp, HostPort) else parse_hostport(hp, what="--accesslog") for hp in accesslog]
    pushed = bool(xds_hps)
    if route_costs and not rl_hps:
        raise ValueError("--route-cost needs --ratelimit (costs are counted by the rate-limit service)")
    if len({rc.prefix for rc in route_costs}) != len(route_costs):
        raise ValueError("--route-cost: each path prefix once")
    cache_duration = int(cache_duration or settings.gateway_cache_seconds)
    if cache_duration < 1:
        raise ValueError("cache duration must be at least 1 second")
    rules = list(scope_rules)
    server = endpoint_of(authserver_url or settings.public_url or f"http://{settings.host}:{settings.port}")

    providers = {
        provider_name(tenant.id, shard): _provider(
            tenant, shard, jwks_uri(server.base, tenant.id, shard), "authserver", cache_duration,
        )
        for shard in shard_ids(tenant)
    }
    main = provider_name(tenant.id)
    if pushed:
        for provider in providers.values():
            _with_push(provider)
    jwt_config: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": providers,
        # keys without a shard prefix (and requests without a key) meet the main JWKS
        "rules": [{"match": {"prefix": "/"}, "requires": (
            _allow_failed({"provider_name": main}) if pushed else {"provider_name": main})}],
    }
    virtual_host: dict[str, Any] = {"name": "upstream", "domains": ["*"],
                                    "routes": _routes(route_costs, tenant.id, None)}
    if len(providers) > 1:
        # Shard routing: the key prefix in the Authorization header picks a
        # route that names that shard's provider, so a request is checked
        # against exactly one small JWKS. (requires_any over all providers
        # would run every provider's extractor on every request.) A matcher
        # tree (longest-prefix map) finds the route in one lookup; a list of
        # header-matching routes would be scanned linearly, one per shard.
        jwt_config["requirement_map"] = {
            name: _allow_failed({"provider_name": name}) if pushed else {"provider_name": name} for name in providers
        }
        # jwt_authn strips every provider's claim_to_headers from every request,
        # a cost linear in providers (p50 +44% at 977 shards, measured in
        # bench/). Sharded, forward the claims from the payload metadata at the
        # virtual host instead: remove client copies, then add ours.
        # (With push, the claims filter does it for both jwt_authn filters.)
        for provider in providers.values():
            provider.pop("claim_to_headers", None)
        if not pushed:
            virtual_host["request_headers_to_remove"] = [header for _, header in CLAIM_HEADERS]
            virtual_host["request_headers_to_add"] = [{
                "header": {"key": header,
                           "value": f"%DYNAMIC_METADATA({JWT_FILTER}:{PAYLOAD_METADATA_KEY}:{claim})%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            } for claim, header in CLAIM_HEADERS]
        by_prefix = {}
        for shard in shard_ids(tenant):
            if shard is None:
                continue
            by_prefix[f"Bearer {shard_prefix(tenant, shard)}"] = {"action": _route_action(
                provider_name(tenant.id, shard), _routes(route_costs, tenant.id, {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
                    "requirement_name": provider_name(tenant.id, shard),
                }))}
        del virtual_host["routes"]
        virtual_host["matcher"] = {
            "matcher_tree": {
                "input": {"name": "authorization", "typed_config": {
                    "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                    "header_name": "authorization",
                }},
                "prefix_match_map": {"map": by_prefix},
            },
            # keys without a shard prefix (and requests without a key) meet the main JWKS
            "on_no_match": {"action": _route_action("main", _routes(route_costs, tenant.id, None))},
        }

    http_filters: list[dict[str, Any]] = [{"name": JWT_FILTER, "typed_config": jwt_config}]
    if pushed:
        # keys too new for the pulled JWKS, the claim headers from whichever
        # filter verified the key, the gate: a verified key that was not
        # removed since (see push.py)
        http_filters += [
            *(_pushed_filter(push.recent_name(tenant.id, b), push.JWT_TYPE, push.recent_config(tenant, ()))
              for b in range(push.RECENT_BUCKETS)),
            _claims_filter(),
            {"name": "authserver.verified", "typed_config": push.verified_config()},
            *(_pushed_filter(push.removed_name(tenant.id, b), push.RBAC_TYPE, push.removed_config(()))
              for b in range(push.REMOVED_BUCKETS)),
            # a call with a key in a roll's grace period: X-API-Key-Expiring on the response
            _pushed_filter(push.expiring_name(tenant.id), push.MATCH_TYPE, push.expiring_config(())),
        ]
        # both jwt_authn filters forward the key; the upstream never sees it
        virtual_host["request_headers_to_remove"] = ["authorization"]
    if rules:
        http_filters.append(_rbac_filter(rules))
    if rl_hps:
        # last before the router: only verified, unrevoked keys with their scope are counted
        http_filters.append(_ratelimit_filter(ratelimit_deny))
        virtual_host["rate_limits"] = [{"actions": _ratelimit_actions(tenant.id)}]
    http_filters.append({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    })

    hcm = {
        "@type": ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                  ".HttpConnectionManager"),
        "stat_prefix": "ingress_http",
        "codec_type": "AUTO",
        "use_remote_address": True,
        # scope rules match path prefixes: match on the path the upstream will see
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
        "route_config": {
            "name": "upstream",
            "virtual_hosts": [virtual_host],
        },
        "http_filters": http_filters,
        # refusals as RFC 9457 problem details, saying no more than our server does
        "local_reply_config": {"mappers": [
            *([_gate_denial_mapper()] if pushed else []),
            _problem_mapper(401, "Missing or invalid credential", "unauthorized"),
            _problem_mapper(403, "Forbidden", "forbidden"),
        ]},
    }

    bootstrap: dict[str, Any] = {
        "node": {"id": node_id or node_id_of(tenant.id), "cluster": "authserver-gateway"},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": _socket_address(listen_hp),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }],
            "clusters": [
                _cluster("authserver", server.hostport, tls_sni=server.host if server.tls else None, ca_file=ca_file),
                _cluster("upstream", upstream_hp),
            ],
        },
    }
    if pushed:
        bootstrap["static_resources"]["clusters"].append(_grpc_cluster(XDS_CLUSTER, xds_hps, xds_tls))
        bootstrap["dynamic_resources"] = {"ads_config": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "set_node_on_first_message_only": True,
            "grpc_services": [{"envoy_grpc": {
                "cluster_name": XDS_CLUSTER,
                # come back soon after authserver does (Envoy's default backs off to 30 s)
                "retry_policy": {"retry_back_off": {"base_interval": "0.25s", "max_interval": "2s"}},
            }}],
        }}
    if rl_hps:
        bootstrap["static_resources"]["clusters"].append(_grpc_cluster(RATELIMIT_CLUSTER, rl_hps, xds_tls))
    if al_hps:
        hcm["access_log"] = [_accesslog(node_id or node_id_of(tenant.id))]
        bootstrap["static_resources"]["clusters"].append(_grpc_cluster(ACCESSLOG_CLUSTER, al_hps, xds_tls))
    if admin_hp is not None:
        bootstrap["admin"] = {"address": _socket_address(admin_hp)}
    return bootstrap
