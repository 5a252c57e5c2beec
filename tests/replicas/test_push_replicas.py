"""Two replicas (one PostgreSQL, one Redis), each the control plane of its own
real Envoy: a change made on either replica reaches both Envoys within a second,
and the two Envoys end up with the same pushed resources."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from _proc import cli, free_port, wait_until

from authserver_devtools import EchoUpstream, EnvoyProcess, find_envoy

pytestmark = [pytest.mark.envoy, pytest.mark.redis, pytest.mark.postgres]

BOUND = 1.0
PUBLIC = "http://127.0.0.1:{port}"


def _env(database_url: str, redis_proc, port_a: int, **extra: str) -> dict[str, str]:
    """Both replicas' environment: one PostgreSQL, one Redis, the default tenant's Envoy node allowed."""
    return {
        "AUTHSERVER_DATABASE_URL": database_url,
        "AUTHSERVER_REDIS_URL": redis_proc.url,
        "AUTHSERVER_PUBLIC_URL": PUBLIC.format(port=port_a),
        "AUTHSERVER_LOG_JSON": "false",
        "AUTHSERVER_RATE_LIMIT_ADMIN_PER_MINUTE": "0",
        "AUTHSERVER_XDS_NODES": "authserver-gateway-default=default",
        **extra,
    }


def _envoy_for(env: dict[str, str], replica, xds_port: int, echo: EchoUpstream, tmp, name: str,
               ratelimit: bool = False):
    from authserver.gateways import envoy_config, load_tenant
    from authserver.settings import Settings

    settings = Settings.from_env(env)
    info = asyncio.run(load_tenant(settings, "default"))
    listen, admin = free_port(), free_port()
    cfg = envoy_config(info, settings, upstream=echo.address, listen=f"127.0.0.1:{listen}",
                       admin=f"127.0.0.1:{admin}", authserver_url=replica.url, xds=[f"127.0.0.1:{xds_port}"],
                       ratelimit=[f"127.0.0.1:{xds_port}"] if ratelimit else ())
    workdir = tmp / name
    workdir.mkdir()
    proc = EnvoyProcess(cfg, binary=find_envoy(), workdir=workdir, log_level="info").start()
    url = f"http://127.0.0.1:{listen}/hello"

    def status(key: str) -> int:
        return httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code


    wait_until(lambda: httpx.get(f"http://127.0.0.1:{admin}/ready").status_code == 200 and status("x") == 401, 30,
               what=f"{name} ready", alive=proc.alive)
    return proc, status, admin


def _rls_errors(admin: int) -> int:
    """Rate-limit calls Envoy let through without an answer (error or timeout)."""
    stats = httpx.get(f"http://127.0.0.1:{admin}/stats", params={"filter": "ratelimit.error$"}).text
    return sum(int(line.rsplit(":", 1)[1]) for line in stats.splitlines() if line.strip())


def _reset(admin: int) -> bool:
    httpx.post(f"http://127.0.0.1:{admin}/reset_counters")
    return False


def _ecds_configs(admin: int) -> dict[str, str]:
    """The pushed filter configs Envoy holds, by name (their content, not versions)."""
    import json

    dump = httpx.get(f"http://127.0.0.1:{admin}/config_dump", params={"resource": "ecds_filters"}).json()
    out = {}
    for entry in dump.get("configs", []):
        ext = entry.get("ecds_filter", {})
        out[ext.get("name")] = json.dumps(ext.get("typed_config"), sort_keys=True)
    return out


def test_two_replicas_each_serving_an_envoy_stay_consistent(fresh_postgres_url, redis_proc, servers, tmp_path):
    if find_envoy() is None:
        pytest.fail("the envoy binary is missing")
    xds_a, xds_b = free_port(), free_port()
    port_a = free_port()
    # reconcile far away: only pub/sub can explain fast propagation
    env = _env(fresh_postgres_url, redis_proc, port_a, AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS="60")
    admin = cli(env, "tenant", "create", "default", "--json", "--algorithm", "ES256")["admin_key"]
    a = servers({**env, "AUTHSERVER_XDS_PORT": str(xds_a)}, port=port_a).start()
    b = servers({**env, "AUTHSERVER_XDS_PORT": str(xds_b)}).start()
    echo = EchoUpstream("127.0.0.1", 0)
    echo.start()
    envoys = []
    try:
        ea = _envoy_for(env, a, xds_a, echo, tmp_path, "envoy-a")
        envoys.append(ea[0])
        eb = _envoy_for(env, b, xds_b, echo, tmp_path, "envoy-b")
        envoys.append(eb[0])
        h = {"Authorization": f"Bearer {admin}"}
        minted = []
        for i, src in enumerate((a, b, a, b)):
            r = httpx.post(f"{src.url}/v1/keys", json={"name": f"k{i}"}, headers=h, timeout=30)
            assert r.status_code == 201, r.text
            key = r.json()
            minted.append(key)
            for _, status, _ in (ea, eb):  # both Envoys, whichever replica minted it
                wait_until(lambda status=status, key=key: status(key["key"]) == 200, BOUND, interval=0.01,
                           what=f"key {i} accepted")
        for i, key in enumerate(minted[:2]):
            src = b if i % 2 == 0 else a
            r = httpx.delete(f"{src.url}/v1/keys/{key['id']}", headers=h, timeout=10)
            assert r.status_code == 200, r.text
            for _, status, _ in (ea, eb):
                wait_until(lambda status=status, key=key: status(key["key"]) == 401, BOUND, interval=0.01,
                           what=f"key {i} refused")
        for key in minted[2:]:
            assert ea[1](key["key"]) == 200 and eb[1](key["key"]) == 200
        # the same state on both: the pushed configs are identical, whichever replica built them
        wait_until(lambda: _ecds_configs(ea[2]) == _ecds_configs(eb[2]), 2, what="identical pushed configs")
        from authserver.gateways import push

        assert set(_ecds_configs(ea[2])) == set(push.resource_names("default"))
    finally:
        for proc in envoys:
            proc.stop()
        echo.stop()


def test_a_rate_limit_holds_across_two_replicas(fresh_postgres_url, redis_proc, servers, tmp_path):
    """Two Envoys, each asking its own replica: the key's limit is one budget."""
    if find_envoy() is None:
        pytest.fail("the envoy binary is missing")
    grpc_a, grpc_b, port_a = free_port(), free_port(), free_port()
    env = _env(fresh_postgres_url, redis_proc, port_a)
    cli(env, "tenant", "create", "default", "--json", "--algorithm", "ES256")
    key = cli(env, "keys", "mint", "--name", "limited", "--json")
    cli(env, "keys", "update", key["id"], "--rate-limit", "10/60s", "--json")
    warm = cli(env, "keys", "mint", "--name", "warm-up", "--json")
    cli(env, "keys", "update", warm["id"], "--rate-limit", "1000/60s", "--json")
    a = servers({**env, "AUTHSERVER_XDS_PORT": str(grpc_a)}, port=port_a).start()
    b = servers({**env, "AUTHSERVER_XDS_PORT": str(grpc_b)}).start()
    echo = EchoUpstream("127.0.0.1", 0)
    echo.start()
    envoys = []
    try:
        ea = _envoy_for(env, a, grpc_a, echo, tmp_path, "envoy-a", ratelimit=True)
        envoys.append(ea[0])
        eb = _envoy_for(env, b, grpc_b, echo, tmp_path, "envoy-b", ratelimit=True)
        envoys.append(eb[0])
        # each Envoy opens its rate-limit connection lazily, and a first call that
        # misses the filter's 50 ms timeout is let through uncounted (fail open):
        # open them with another limited key, so what follows measures the budget
        for e in (ea, eb):
            wait_until(lambda e=e: e[1](warm["key"]) == 200 and _rls_errors(e[2]) == 0 or _reset(e[2]), 10,
                       what="the rate-limit service answering in time")
        codes = [(ea if i % 2 else eb)[1](key["key"]) for i in range(40)]
        # a call the service answers after Envoy's 50 ms is let through (fail open,
        # failure_mode_deny false), counted by the service if it got that far: the
        # budget holds when every call Envoy waited for is accounted for
        errors = sum(_rls_errors(e[2]) for e in (ea, eb))
        assert 10 <= codes.count(200) <= 10 + errors, (codes, f"fail-opens: {errors}")
        assert codes[:10] == [200] * 10 or errors, codes
    finally:
        for proc in envoys:
            proc.stop()
        echo.stop()


def test_subject_limits_set_on_one_replica_hold_at_both_within_a_second(fresh_postgres_url, redis_proc, servers,
                                                                       tmp_path):
    """Two keys of one subject, each used through the Envoy of its own replica:
    limits set on one replica are one shared budget at both within a second
    (the change notice; reconcile is far away), and removed the same way."""
    if find_envoy() is None:
        pytest.fail("the envoy binary is missing")
    grpc_a, grpc_b, port_a = free_port(), free_port(), free_port()
    env = _env(fresh_postgres_url, redis_proc, port_a, AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS="60")
    admin = cli(env, "tenant", "create", "default", "--json", "--algorithm", "ES256")["admin_key"]
    k1 = cli(env, "keys", "mint", "--subject", "cust", "--json")
    k2 = cli(env, "keys", "mint", "--subject", "cust", "--json")
    a = servers({**env, "AUTHSERVER_XDS_PORT": str(grpc_a)}, port=port_a).start()
    b = servers({**env, "AUTHSERVER_XDS_PORT": str(grpc_b)}).start()
    echo = EchoUpstream("127.0.0.1", 0)
    echo.start()
    envoys = []
    try:
        ea = _envoy_for(env, a, grpc_a, echo, tmp_path, "envoy-a", ratelimit=True)
        envoys.append(ea[0])
        eb = _envoy_for(env, b, grpc_b, echo, tmp_path, "envoy-b", ratelimit=True)
        envoys.append(eb[0])
        h = {"Authorization": f"Bearer {admin}"}
        r = httpx.put(f"{a.url}/v1/subjects/cust/limits", json={"rate_limits": [{"limit": 6, "window_seconds": 3600}]},
                      headers=h, timeout=10)
        assert r.status_code == 200, r.text
        # replica b hears of it by the notice: its Envoy refuses once the 6 are spent, within the bound
        wait_until(lambda: eb[1](k2["key"]) == 429, BOUND, interval=0.01, what="the subject limit at replica b")
        assert ea[1](k1["key"]) == 429  # the same budget at replica a
        r = httpx.delete(f"{b.url}/v1/subjects/cust/limits", headers=h, timeout=10)
        assert r.status_code == 200, r.text
        wait_until(lambda: ea[1](k1["key"]) == 200, BOUND, interval=0.01, what="removed at replica a")
        assert eb[1](k2["key"]) == 200
    finally:
        for proc in envoys:
            proc.stop()
        echo.stop()
