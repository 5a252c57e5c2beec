"""What the key cache keeps for push (recent publications and removals within
the window) and the Envoy configs built from it (gateways/push.py)."""

from __future__ import annotations

import json

import pytest
from test_keycache_tenant import NOW, key_row, tenant_row

from authserver.gateways import push
from authserver.keycache import KeyCache, TenantInfo
from authserver.settings import Settings, parse_nodes

WINDOW = 600.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _cache(clock: Clock):
    cache = KeyCache(clock, push_window=WINDOW)
    changed: list[str] = []
    cache.listeners.append(changed.append)
    tk = cache.set_tenant(tenant_row())
    return cache, tk, changed


def test_recent_keys_and_removals_live_one_window() -> None:
    clock = Clock()
    cache, tk, changed = _cache(clock)
    a, _ = key_row(tenant_row())
    b, _ = key_row(tenant_row())
    a.published_at = b.published_at = int(NOW)
    changed.clear()
    assert cache.apply(a) and cache.apply(b)
    assert changed == ["acme", "acme"]  # every change is announced
    recent, removed = tk.push_state(clock())
    assert {k.kid for k in recent} == {a.id, b.id} and removed == {}

    a.revoked_at = int(NOW) + 10
    clock.now = NOW + 10
    assert cache.apply(a)
    recent, removed = tk.push_state(clock())
    assert [k.kid for k in recent] == [b.id] and removed == {a.id: int(NOW) + 10}

    clock.now = NOW + WINDOW + 11  # both aged out: the pulled JWKS has caught up by now
    assert tk.push_state(clock()) == ([], {})


def test_a_scheduled_removal_counts_from_its_time_and_old_keys_are_not_recent() -> None:
    clock = Clock()
    cache, tk, _ = _cache(clock)
    old, _ = key_row(tenant_row())
    old.published_at = int(NOW - WINDOW - 1)  # gateways have had it for a window: not pushed
    old.grace_ends_at = int(NOW + 5)
    cache.apply(old)
    assert tk.push_state(clock()) == ([], {})
    clock.now = NOW + 30  # the grace ended 25 s ago; the next read prunes it
    recent, removed = tk.push_state(clock())
    assert removed == {old.id: int(NOW + 5)}  # filed at its own time


def test_removals_from_before_a_rebuild_are_noted_and_old_ones_ignored() -> None:
    clock = Clock()
    cache, tk, _ = _cache(clock)
    fresh, _ = key_row(tenant_row())
    fresh.revoked_at = int(NOW - 100)
    stale, _ = key_row(tenant_row())
    stale.revoked_at = int(NOW - WINDOW - 100)
    admin, _ = key_row(tenant_row())
    admin.kind, admin.revoked_at = "admin", int(NOW - 5)
    for row in (fresh, stale, admin):
        cache.note_removed(row)
    assert list(tk.push_state(clock())[1]) == [fresh.id]  # admin keys never reach gateways


def test_replace_with_announces_every_tenant() -> None:
    clock = Clock()
    cache, _, changed = _cache(clock)
    fresh = KeyCache(clock, push_window=WINDOW)
    fresh.set_tenant(tenant_row())
    changed.clear()
    cache.replace_with(fresh)
    assert changed == ["acme"]
    key, _ = key_row(tenant_row())
    key.published_at = int(NOW)
    cache.apply(key)  # the swapped-in tenant reports to our listeners, not the fresh cache's
    assert changed == ["acme", "acme"]


def test_recent_config_routes_each_shard_prefix_to_its_provider() -> None:
    info = TenantInfo.from_row(tenant_row(shard_count=4))
    config = push.recent_config(info, [(None, {"kid": "m"}), (3, {"kid": "c"}), (1, {"kid": "a"}),
                                       (1, {"kid": "b"})])
    assert list(config["providers"]) == ["recent_s1", "recent_s3", "recent"]  # the main prefix last
    prefixes = [r["match"]["headers"][0]["string_match"]["prefix"] for r in config["rules"]]
    assert prefixes == ["Bearer sk_live_s1_", "Bearer sk_live_s3_", "Bearer sk_live_"]
    s1 = config["providers"]["recent_s1"]
    assert [k["kid"] for k in json.loads(s1["local_jwks"]["inline_string"])["keys"]] == ["a", "b"]
    assert s1["from_headers"] == [{"name": "Authorization", "value_prefix": "Bearer sk_live_s1_"}]
    assert s1["issuer"] == info.issuer and s1["audiences"] == [info.audience]
    for rule in config["rules"]:  # the gate decides, never this filter
        assert {"allow_missing_or_failed": {}} in rule["requires"]["requires_any"]["requirements"]
    assert push.recent_config(info, []) == {"@type": push.JWT_TYPE}  # nothing recent: verifies nothing


def test_removed_config_denies_removed_ids_by_exact_match() -> None:
    empty = push.removed_config([])
    assert "matcher_tree" not in empty["matcher"]
    assert empty["matcher"]["on_no_match"]["action"]["typed_config"]["action"] == "ALLOW"
    config = push.removed_config(["k1", "k2"])
    tree = config["matcher"]["matcher_tree"]
    assert tree["input"]["typed_config"]["header_name"] == push.KID_HEADER
    assert set(tree["exact_match_map"]["map"]) == {"k1", "k2"}
    for action in tree["exact_match_map"]["map"].values():  # named for the 401 mapper
        assert action["action"]["typed_config"]["action"] == "DENY"
        assert action["action"]["name"].startswith(push.GATE_DENIAL_PREFIX)
    verified = push.verified_config()["matcher"]
    assert verified["on_no_match"]["action"]["name"].startswith(push.GATE_DENIAL_PREFIX)


def test_buckets_come_round_only_after_their_events_aged_out() -> None:
    window, buckets = 660.0, push.REMOVED_BUCKETS
    length = window / (buckets - 1)
    seen = {push.bucket_of(t, window, buckets) for t in range(0, int(length * buckets), 7)}
    assert seen == set(range(buckets))
    for t in range(0, 5000, 13):  # the next event in t's bucket is at least a window later
        b = push.bucket_of(t, window, buckets)
        again = next(u for u in range(t + 1, t + 10_000) if push.bucket_of(u, window, buckets) == b and
                     push.bucket_of(u - 1, window, buckets) != b)
        assert again - t >= window


def test_one_change_rebuilds_one_bucket() -> None:
    from authserver.gateways.xds import build_resources

    clock = Clock()
    cache, tk, _ = _cache(clock)
    memo: dict = {}
    first = build_resources(tk, clock(), memo)
    assert set(first) == set(push.resource_names("acme"))
    key, _ = key_row(tenant_row())
    key.published_at = int(NOW)
    cache.apply(key)
    second = build_resources(tk, clock(), memo)
    changed = {name for name in first if first[name].digest != second[name].digest}
    assert changed == {push.recent_name("acme", push.bucket_of(NOW, tk.recent_window, push.RECENT_BUCKETS))}


def test_xds_settings() -> None:
    assert parse_nodes(" gw-1 = acme ,gw-2=beta,") == {"gw-1": "acme", "gw-2": "beta"}
    for bad in ("gw-1", "=acme", "gw-1="):
        with pytest.raises(ValueError):
            parse_nodes(bad)
    with pytest.raises(ValueError, match="AUTHSERVER_XDS_NODES"):
        Settings(xds_nodes="nope")
    with pytest.raises(ValueError, match="go together"):
        Settings(xds_tls_cert="/c.pem")
    with pytest.raises(ValueError, match="AUTHSERVER_RATELIMIT_PORT needs AUTHSERVER_XDS_PORT"):
        Settings(ratelimit_port=18001)
    s = Settings.from_env({"AUTHSERVER_XDS_PORT": "18000", "AUTHSERVER_XDS_NODES": "gw=acme"})
    assert s.xds_port == 18000 and s.xds_node_tenants == {"gw": "acme"}
    assert s.push_window_seconds == 2 * s.gateway_cache_seconds + 60
    assert Settings().xds_port is None and Settings().push_window_seconds == 0  # off: nothing kept
    with pytest.raises(ValueError, match="AUTHSERVER_XDS_PORT"):
        Settings.from_env({"AUTHSERVER_XDS_PORT": "70000"})


def test_keys_in_a_rolls_grace_are_expiring_until_it_ends_or_they_are_revoked() -> None:
    from authserver.gateways.xds import build_resources

    clock = Clock()
    cache, tk, _ = _cache(clock)
    old, _ = key_row(tenant_row())
    plain, _ = key_row(tenant_row())
    plain.expires_at = int(NOW) + 50  # expiring by its exp, not rolled: no header
    cache.apply(old), cache.apply(plain)
    assert tk.expiring_state(clock()) == []
    memo: dict = {}
    before = build_resources(tk, clock(), memo)

    old.grace_ends_at, old.rolled_to = int(NOW) + 100, "successor"  # rolled
    cache.apply(old)
    assert tk.expiring_state(clock()) == [(old.id, int(NOW) + 100)]
    after = build_resources(tk, clock(), memo)
    assert {n for n in before if before[n].digest != after[n].digest} == {push.expiring_name("acme")}

    clock.now = NOW + 100  # the grace ended: the key left, and with it the header
    assert tk.expiring_state(clock()) == []
    old.grace_ends_at, old.revoked_at = int(NOW) + 300, int(NOW) + 150  # a fresh roll, then a revocation
    clock.now = NOW + 140
    cache.apply(old)
    assert [k for k, _ in tk.expiring_state(clock())] == [old.id]
    clock.now = NOW + 150
    cache.apply(old)
    assert tk.expiring_state(clock()) == []


def test_expiring_config_adds_the_header_per_key_id() -> None:
    config = push.expiring_config([("k1", 1_800_000_000), ("k2", 1_800_000_300)])
    assert config["@type"] == push.MATCH_TYPE
    tree = config["xds_matcher"]["matcher_tree"]
    assert tree["input"]["typed_config"]["header_name"] == push.KID_HEADER
    values = {}
    for kid, entry in tree["exact_match_map"]["map"].items():
        mutation = entry["action"]["typed_config"]["typed_config"]["typed_config"]
        [append] = mutation["mutations"]["response_mutations"]
        values[kid] = (append["append"]["header"]["key"], append["append"]["header"]["value"])
    assert values == {"k1": ("x-api-key-expiring", "2027-01-15T08:00:00Z"),
                      "k2": ("x-api-key-expiring", "2027-01-15T08:05:00Z")}
    empty = push.expiring_config([])["xds_matcher"]["matcher_tree"]["exact_match_map"]["map"]
    assert list(empty) == [""]  # no key id is empty: never matches, and adds nothing
    assert empty[""]["action"]["typed_config"]["typed_config"]["typed_config"]["mutations"] == {
        "response_mutations": []}
