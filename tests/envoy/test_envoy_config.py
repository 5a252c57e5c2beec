"""The generated gateway configs: their shape (pure functions), Envoy's own
validation of them, the CLI, and the examples checked in under deploy/."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from authserver.gateways import (
    envoy_config,
    espv2_config,
    espv2_flags,
    parse_hostport,
    parse_route_cost,
    parse_scope_rule,
    render_envoy,
    routes_of,
    scope_regex,
)
from authserver.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {
    # file under deploy/ -> the documented command that prints it
    "envoy/envoy.example.yaml": ["gateway", "envoy", "--tenant", "default", "--upstream", "127.0.0.1:9000",
                                 "--listen", "127.0.0.1:10000", "--require-scope", "/admin=admin"],
    "espv2/openapi-security.example.yaml": ["gateway", "espv2", "--tenant", "default"],
}


def tenant(**kw):
    base = dict(id="acme", issuer="https://auth.example.com/t/acme", audience="api://acme", key_prefix="sk_live_",
                shard_count=1)
    return SimpleNamespace(**{**base, **kw})


def settings(**kw) -> Settings:
    return Settings(**{"public_url": "http://127.0.0.1:8080", **kw})


def hcm(cfg):
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def jwt_filter(cfg):
    return hcm(cfg)["http_filters"][0]["typed_config"]


def test_envoy_config_follows_the_gateway_facts():
    cfg = envoy_config(tenant(), settings(), upstream="10.0.0.5:9000", listen="0.0.0.0:8443")
    assert "jwt_cache_config" not in json.dumps(cfg)  # a cached token would outlive its revocation
    jf = jwt_filter(cfg)
    (name, p), = jf["providers"].items()
    assert name == "authserver_acme"
    assert p["issuer"] == "https://auth.example.com/t/acme" and p["audiences"] == ["api://acme"]
    assert p["from_headers"] == [{"name": "Authorization", "value_prefix": "Bearer sk_live_"}]
    assert p["forward"] is False
    assert {(c["claim_name"], c["header_name"]) for c in p["claim_to_headers"]} == {
        ("sub", "x-api-key-subject"), ("scope", "x-api-key-scope"), ("jti", "x-api-key-id")}
    assert p["payload_in_metadata"] == "jwt_payload"
    rj = p["remote_jwks"]
    assert rj["http_uri"]["uri"] == "http://127.0.0.1:8080/t/acme/.well-known/jwks.json"
    assert rj["http_uri"]["cluster"] == "authserver"
    assert rj["cache_duration"] == "300s"  # settings.gateway_cache_seconds
    assert rj["async_fetch"]["fast_listener"] is False
    assert rj["retry_policy"]["num_retries"] >= 1
    assert jf["rules"] == [{"match": {"prefix": "/"}, "requires": {"provider_name": "authserver_acme"}}]
    assert [f["name"] for f in hcm(cfg)["http_filters"]] == [
        "envoy.filters.http.jwt_authn", "envoy.filters.http.router",
    ]
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    ep = lambda c: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]  # noqa: E731
    assert ep(clusters["authserver"]) == {"address": "127.0.0.1", "port_value": 8080}
    assert ep(clusters["upstream"]) == {"address": "10.0.0.5", "port_value": 9000}
    assert cfg["static_resources"]["listeners"][0]["address"]["socket_address"] == {
        "address": "0.0.0.0", "port_value": 8443}
    assert "admin" not in cfg
    assert envoy_config(tenant(), settings(), cache_duration=7)["static_resources"]["listeners"][0][
        "filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]["typed_config"]["providers"][
        "authserver_acme"]["remote_jwks"]["cache_duration"] == "7s"
    assert jwt_filter(envoy_config(tenant(), settings(gateway_cache_seconds=42)))["providers"][
        "authserver_acme"]["remote_jwks"]["cache_duration"] == "42s"


def test_scope_rules_become_one_deny_rbac_filter():
    rules = [parse_scope_rule("/admin=admin"), parse_scope_rule("/files=files:write")]
    cfg = envoy_config(tenant(), settings(), scope_rules=rules)
    names = [f["name"] for f in hcm(cfg)["http_filters"]]
    assert names == ["envoy.filters.http.jwt_authn", "envoy.filters.http.rbac", "envoy.filters.http.router"]
    rbac = hcm(cfg)["http_filters"][1]["typed_config"]["rules"]
    assert rbac["action"] == "DENY" and len(rbac["policies"]) == 2
    pol = list(rbac["policies"].values())[1]
    assert pol["permissions"] == [{"url_path": {"path": {"prefix": "/files"}}}]
    m = pol["principals"][0]["not_id"]["sourced_metadata"]["metadata_matcher"]
    assert m["filter"] == "envoy.filters.http.jwt_authn"
    assert m["path"] == [{"key": "jwt_payload"}, {"key": "scope"}]
    assert m["value"]["string_match"]["safe_regex"]["regex"] == scope_regex("files:write")
    assert hcm(cfg)["normalize_path"] is True and hcm(cfg)["merge_slashes"] is True


@pytest.mark.parametrize("scope,value,matches", [
    ("write", "write", True),
    ("write", "read write", True),
    ("write", "write read", True),
    ("write", "a write b", True),
    ("write", "writer", False),
    ("write", "rewrite", False),
    ("write", "read writes", False),
    ("write", "", False),
    ("a.b", "a.b", True),
    ("a.b", "axb", False),
    ("x+(y)|z", "q x+(y)|z", True),
    ("x+(y)|z", "xx(y)|z", False),
    ("files:write", "files:writer my-files:write", False),
])
def test_scope_regex_matches_whole_scope_tokens(scope, value, matches):
    # Envoy's safe_regex string matcher is a full match (RE2); Python's fullmatch agrees on this syntax
    assert bool(re.fullmatch(scope_regex(scope), value)) is matches


def test_sharded_tenant_gets_one_provider_per_shard():
    cfg = envoy_config(tenant(shard_count=3), settings())
    jf = jwt_filter(cfg)
    assert list(jf["providers"]) == [
        "authserver_acme", "authserver_acme_s0", "authserver_acme_s1", "authserver_acme_s2",
    ]
    assert jf["providers"]["authserver_acme_s1"]["from_headers"][0]["value_prefix"] == "Bearer sk_live_s1_"
    assert jf["providers"]["authserver_acme_s1"]["remote_jwks"]["http_uri"]["uri"] == \
        "http://127.0.0.1:8080/t/acme/shards/1/jwks.json"
    # one route per shard: its key prefix selects exactly one provider, found by
    # a longest-prefix matcher on the Authorization header (one lookup, no scan)
    assert jf["requirement_map"] == {n: {"provider_name": n} for n in jf["providers"]}
    vhost = hcm(cfg)["route_config"]["virtual_hosts"][0]
    assert "routes" not in vhost
    tree = vhost["matcher"]["matcher_tree"]
    assert tree["input"]["typed_config"]["header_name"] == "authorization"
    by_prefix = tree["prefix_match_map"]["map"]
    assert list(by_prefix) == [f"Bearer sk_live_s{n}_" for n in range(3)]
    for n, entry in enumerate(by_prefix.values()):
        route = entry["action"]["typed_config"]
        assert route["route"] == {"cluster": "upstream"}
        per_route = route["typed_per_filter_config"]["envoy.filters.http.jwt_authn"]
        assert per_route["requirement_name"] == f"authserver_acme_s{n}"
    default = vhost["matcher"]["on_no_match"]["action"]["typed_config"]
    assert "typed_per_filter_config" not in default and default["route"] == {"cluster": "upstream"}
    routes = routes_of(vhost)
    assert len(routes) == 4 and routes[-1] is default
    # claims are forwarded once, at the virtual host, not per provider (that is linear in shards)
    assert not any("claim_to_headers" in p for p in jf["providers"].values())
    assert vhost["request_headers_to_remove"] == ["x-api-key-subject", "x-api-key-scope", "x-api-key-id"]
    assert [h["header"]["value"] for h in vhost["request_headers_to_add"]] == [
        f"%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:jwt_payload:{c})%" for c in ("sub", "scope", "jti")]
    # each route its own dicts: the YAML has no anchors/aliases and changing one route changes only it
    assert "&id" not in render_envoy(tenant(shard_count=3), settings())
    routes[0]["route"]["cluster"] = "changed"
    assert routes[1]["route"] == routes[-1]["route"] == {"cluster": "upstream"}
    assert routes_of(hcm(envoy_config(tenant(), settings()))["route_config"]["virtual_hosts"][0]) == \
        [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]
    assert jf["rules"] == [{"match": {"prefix": "/"}, "requires": {"provider_name": "authserver_acme"}}]


COSTS = [parse_route_cost("/search=5"), parse_route_cost("/search/deep=20"), parse_route_cost("/v2=2")]


def _cost_limits(route: dict) -> list[dict]:
    per_route = route.get("typed_per_filter_config", {}).get("envoy.filters.http.ratelimit")
    assert per_route is None or per_route["@type"].endswith("ratelimit.v3.RateLimitPerRoute")
    return per_route["rate_limits"] if per_route else []


def test_route_costs_are_route_rate_limits_with_hits_addend_longest_prefix_first():
    cfg = envoy_config(tenant(), settings(), ratelimit=["127.0.0.1:18000"], route_costs=COSTS)
    vhost = hcm(cfg)["route_config"]["virtual_hosts"][0]
    routes = routes_of(vhost)
    assert [r["match"]["prefix"] for r in routes] == ["/search/deep", "/search", "/v2", "/"]
    vh_actions = vhost["rate_limits"][0]["actions"]  # the default route: the virtual host's, cost 1
    for route, cost in zip(routes, (20, 5, 2), strict=False):
        (limit,) = _cost_limits(route)
        assert limit["hits_addend"] == {"number": cost} and limit["actions"] == vh_actions
        assert limit["actions"] is not vh_actions  # own dicts: no YAML aliases
    assert _cost_limits(routes[-1]) == [] and route["route"] == {"cluster": "upstream"}
    # sharded: every shard's action is the same list of routes, each naming its shard's provider
    cfg = envoy_config(tenant(shard_count=2), settings(), ratelimit=["127.0.0.1:18000"], route_costs=COSTS)
    vhost = hcm(cfg)["route_config"]["virtual_hosts"][0]
    shard = vhost["matcher"]["matcher_tree"]["prefix_match_map"]["map"]["Bearer sk_live_s1_"]["action"]
    assert shard["typed_config"]["@type"].endswith("envoy.config.route.v3.RouteList")
    assert [r["typed_per_filter_config"]["envoy.filters.http.jwt_authn"]["requirement_name"]
            for r in shard["typed_config"]["routes"]] == ["authserver_acme_s1"] * 4
    assert [len(_cost_limits(r)) for r in shard["typed_config"]["routes"]] == [1, 1, 1, 0]
    assert len(routes_of(vhost)) == 3 * 4
    assert "&id" not in render_envoy(tenant(shard_count=2), settings(), ratelimit=["127.0.0.1:1"], route_costs=COSTS)


def test_bad_route_costs_are_refused():
    for bad in ("search=5", "/search", "/search=0", "/search=-1", "/search=x", "/a b=2", "/s=1000001"):
        with pytest.raises(ValueError, match="route-cost|path prefix"):
            parse_route_cost(bad)
    with pytest.raises(ValueError, match="needs --ratelimit"):
        envoy_config(tenant(), settings(), route_costs=COSTS)
    with pytest.raises(ValueError, match="each path prefix once"):
        envoy_config(tenant(), settings(), ratelimit=["127.0.0.1:1"], route_costs=COSTS + [parse_route_cost("/v2=3")])


def test_https_authorization_server_is_verified():
    cfg = envoy_config(tenant(), settings(public_url="https://auth.example.com"), upstream="backend.internal:8080")
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    auth = clusters["authserver"]
    assert auth["type"] == "STRICT_DNS"
    sa = auth["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert sa == {"address": "auth.example.com", "port_value": 443}
    tls = auth["transport_socket"]["typed_config"]
    assert tls["sni"] == "auth.example.com"
    vc = tls["common_tls_context"]["validation_context"]
    assert vc["trusted_ca"]["filename"] and vc["match_typed_subject_alt_names"][0]["matcher"] == {
        "exact": "auth.example.com"}
    assert clusters["upstream"]["type"] == "STRICT_DNS"
    assert jwt_filter(cfg)["providers"]["authserver_acme"]["remote_jwks"]["http_uri"]["uri"] == \
        "https://auth.example.com/t/acme/.well-known/jwks.json"
    # --authserver-url: fetch from an internal address, issuer unchanged
    cfg = envoy_config(tenant(), settings(public_url="https://auth.example.com"),
                       authserver_url="http://authserver.internal:8080")
    p = jwt_filter(cfg)["providers"]["authserver_acme"]
    assert p["remote_jwks"]["http_uri"]["uri"] == "http://authserver.internal:8080/t/acme/.well-known/jwks.json"
    assert p["issuer"] == "https://auth.example.com/t/acme"


@pytest.mark.parametrize("bad", ["", "host", "host:", ":80", "host:0", "host:70000", "host:x"])
def test_bad_addresses(bad):
    with pytest.raises(ValueError):
        parse_hostport(bad)


def test_addresses():
    assert parse_hostport("127.0.0.1:9000").port == 9000
    assert parse_hostport("[::1]:9000").host == "::1"
    assert parse_hostport("backend:80").is_ip is False


@pytest.mark.parametrize("bad", ["admin", "/admin", "/admin=", "admin=x", "/a=has space", '/a=q"uote'])
def test_bad_scope_rules(bad):
    with pytest.raises(ValueError):
        parse_scope_rule(bad)


def test_espv2_config():
    cfg = espv2_config(tenant(), settings())
    (name, d), = cfg["securityDefinitions"].items()
    assert d["x-google-issuer"] == "https://auth.example.com/t/acme"
    assert d["x-google-jwks_uri"] == "http://127.0.0.1:8080/t/acme/.well-known/jwks.json"
    assert d["x-google-audiences"] == "api://acme"
    assert d["x-google-jwt-locations"] == [{"header": "Authorization", "value_prefix": "Bearer sk_live_"}]
    assert d["type"] == "oauth2" and d["flow"] == "implicit"
    assert cfg["security"] == [{name: []}]
    assert espv2_flags(settings()) == ["--jwt_cache_size=0", "--jwks_cache_duration_in_s=300"]
    assert espv2_flags(settings(), 30)[1] == "--jwks_cache_duration_in_s=30"
    sharded = espv2_config(tenant(shard_count=2), settings())
    assert len(sharded["securityDefinitions"]) == 3 and len(sharded["security"]) == 3  # any one of them


def test_rendered_yaml_explains_itself_and_parses():
    text = render_envoy(tenant(), settings(), cache_duration=10)
    assert text.startswith("# ")
    assert "jwt_cache_config" in text and "differs from AUTHSERVER_GATEWAY_CACHE_SECONDS" in text
    assert yaml.safe_load(text) == envoy_config(tenant(), settings(), cache_duration=10)


# --- with the envoy binary ----------------------------------------------------------


def _validate(envoy_binary: str, cfg: dict, tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([envoy_binary, "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                          "--log-level", "warning"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


@pytest.mark.envoy
def test_envoy_accepts_every_variant(envoy_binary, tmp_path):
    variants = {
        "plain": envoy_config(tenant(), settings()),
        "scopes": envoy_config(tenant(), settings(), scope_rules=[parse_scope_rule("/a=x.y+z"),
                                                                  parse_scope_rule("/b=files:write")],
                               admin="127.0.0.1:9901"),
        "sharded": envoy_config(tenant(shard_count=4), settings()),
        "https": envoy_config(tenant(), settings(public_url="https://auth.example.com/base"),
                              upstream="backend.internal:80"),
        "ipv6": envoy_config(tenant(), settings(), listen="[::1]:10000", upstream="[::1]:9000"),
        "costs": envoy_config(tenant(), settings(), ratelimit=["127.0.0.1:18000"], route_costs=COSTS),
        "costs_sharded": envoy_config(tenant(shard_count=3), settings(), ratelimit=["127.0.0.1:18000"],
                                      xds=["127.0.0.1:18000"], route_costs=COSTS),
    }
    for name, cfg in variants.items():
        log = _validate(envoy_binary, cfg, tmp_path, name)
        assert "deprecated" not in log.lower(), (name, log)


# --- the CLI and the checked-in examples ------------------------------------------------


@pytest.fixture
def cli_db(tmp_path, monkeypatch):
    """A database with the default tenant, as `authserver quickstart` leaves it on 127.0.0.1:8080."""
    from authserver.offline import open_core

    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    for var in [v for v in os.environ if v.startswith("AUTHSERVER_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AUTHSERVER_DATABASE_URL", url)

    async def make():
        async with open_core(Settings.from_env()) as core:
            await core.tenants.create_tenant("default")

    asyncio.run(make())
    return url


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from authserver.cli import main

    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_prints_configs(cli_db, capsys):
    rc, out, err = _cli(capsys, "gateway", "envoy", "--cache-duration", "30", "--require-scope", "/w=write",
                        "--admin", "127.0.0.1:9901")
    assert rc == 0, err
    cfg = yaml.safe_load(out)
    p = jwt_filter(cfg)["providers"]["authserver_default"]
    assert p["issuer"] == "http://127.0.0.1:8080/t/default" and p["audiences"] == ["api://default"]
    assert p["remote_jwks"]["cache_duration"] == "30s"
    assert cfg["admin"]["address"]["socket_address"]["port_value"] == 9901
    rc, out, err = _cli(capsys, "gateway", "envoy", "--format", "json")
    assert rc == 0 and json.loads(out)["static_resources"]
    rc, out, err = _cli(capsys, "gateway", "espv2", "--cache-duration", "60")
    assert rc == 0 and "--jwt_cache_size=0" in out and "--jwks_cache_duration_in_s=60" in out
    assert yaml.safe_load(out)["securityDefinitions"]["authserver_default"]["x-google-jwt-locations"]


@pytest.mark.parametrize("args,message", [
    (["gateway", "envoy", "--tenant", "nope"], "no tenant 'nope'"),
    (["gateway", "espv2", "--tenant", "nope"], "no tenant 'nope'"),
    (["gateway", "envoy", "--require-scope", "admin"], "PATH_PREFIX=SCOPE"),
    (["gateway", "envoy", "--upstream", "nowhere"], "--upstream must be HOST:PORT"),
    (["gateway", "envoy", "--cache-duration", "0"], "at least 1 second"),
])
def test_cli_errors(cli_db, capsys, args, message):
    rc, out, err = _cli(capsys, *args)
    assert rc == 2 and message in err and out == ""


def test_cli_without_a_database_creates_none(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("AUTHSERVER_")]:
        monkeypatch.delenv(var)
    rc, out, err = _cli(capsys, "gateway", "envoy")
    assert rc == 2 and "no database" in err
    assert not any(tmp_path.iterdir())


def test_checked_in_examples_are_current(cli_db, capsys):
    """deploy/*/…example.yaml are exactly what the documented commands print.
    Regenerate with UPDATE_DEPLOY_EXAMPLES=1 python -m pytest tests/envoy -k examples."""
    for rel, args in EXAMPLES.items():
        rc, out, err = _cli(capsys, *args)
        assert rc == 0, err
        path = ROOT / "deploy" / rel
        if os.environ.get("UPDATE_DEPLOY_EXAMPLES"):
            path.write_text(out)
        assert path.exists() and path.read_text() == out, f"{path} is stale: see this test's docstring"


@pytest.mark.envoy
def test_checked_in_envoy_example_validates(envoy_binary, tmp_path):
    cfg = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.example.yaml").read_text())
    _validate(envoy_binary, cfg, tmp_path, "example")


def test_cli_route_costs_and_tls_for_the_rate_limit_service_alone(cli_db, capsys):
    rc, out, err = _cli(capsys, "gateway", "envoy", "--ratelimit", "10.0.0.5:18000", "--route-cost", "/s=5",
                        "--xds-ca", "ca.crt", "--xds-cert", "envoy.crt", "--xds-key", "envoy.key")
    assert rc == 0, err
    assert "A call under /s costs 5" in out
    cfg = yaml.safe_load(out)
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    tls = clusters["authserver_ratelimit"]["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["tls_certificates"][0]["certificate_chain"]["filename"] == "envoy.crt"
    routes = routes_of(hcm(cfg)["route_config"]["virtual_hosts"][0])
    assert _cost_limits(routes[0])[0]["hits_addend"] == {"number": 5}
    rc, _, err = _cli(capsys, "gateway", "envoy", "--route-cost", "/s=5")
    assert rc != 0 and "needs --ratelimit" in err
    rc, _, err = _cli(capsys, "gateway", "envoy", "--ratelimit", "127.0.0.1:1", "--route-cost", "/s=zero")
    assert rc != 0 and "PATH_PREFIX=N" in err
