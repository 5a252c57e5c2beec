"""The harness's own pieces, fast: wrk output parsing, the pure-Python
fallbacks used when wrk or nginx are missing, least squares, JWKS sizing."""

from __future__ import annotations

import math
import os
import time

import httpx
import pytest

from bench import _common
from bench._common import StaticServer, cpu_run_seconds, cpu_seconds, load, parse_wrk, pct, slope, tool
from bench._keys import ENVOY_CAP, bytes_per_key, synthetic_jwk

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:10000/bench
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   312.45us  120.11us   5.01ms   91.20%
    Req/Sec    11.89k   410.22    12.40k    70.00%
  Latency Distribution
     50%  293.00us
     75%  330.00us
     90%  390.00us
     99%    1.02ms
  35512 requests in 3.00s, 4.34MB read
Requests/sec:  11837.02
Transfer/sec:      1.45MB
"""


def test_parse_wrk_latency_distribution_and_rate():
    r = parse_wrk(WRK_OUTPUT)
    assert (r.p50_ms, r.p99_ms, r.rps, r.requests, r.errors, r.ok) == (0.293, 1.02, 11837.02, 35512, 0, True)


def test_parse_wrk_counts_wrong_statuses_and_socket_errors():
    out = WRK_OUTPUT.replace("Requests/sec:", "  Socket errors: connect 0, read 2, write 0, timeout 1\n"
                             "  Non-2xx or 3xx responses: 10\nRequests/sec:")
    r = parse_wrk(out)
    assert r.errors == 13 and not r.ok
    assert (r.wrong_status, r.socket_errors) == (10, 3)  # the push suite reports resets apart
    # expecting 401s: the non-2xx answers are the good ones
    r = parse_wrk(WRK_OUTPUT.replace("Requests/sec:", "  Non-2xx or 3xx responses: 35512\nRequests/sec:"), 401)
    assert r.errors == 0 and r.ok


def test_parse_wrk_garbage_is_not_ok():
    r = parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")
    assert not r.ok and math.isnan(r.p50_ms)


def test_tool_override_forces_the_fallback(monkeypatch):
    monkeypatch.setenv("BENCH_WRK", "none")
    monkeypatch.setenv("BENCH_NGINX", "/opt/nginx/sbin/nginx")
    assert tool("wrk") is None and tool("nginx") == "/opt/nginx/sbin/nginx"
    info = _common.machine_info()
    assert info["load_generator"] == "python-asyncio" and info["static_baseline"] == "nginx"


def test_asyncio_load_generator_against_the_static_server(monkeypatch):
    monkeypatch.setenv("BENCH_WRK", "none")
    body = b'{"keys":[]}' * 100
    with StaticServer({"/jwks.json": body}) as static:
        r = load(f"{static.url}/jwks.json", seconds=0.5, connections=2)
        assert r.tool == "python-asyncio" and r.ok and r.requests > 10 and r.rps > 0
        assert 0 < r.p50_ms <= r.p99_ms
        missing = load(f"{static.url}/nope", seconds=0.3, connections=1)
        assert not missing.ok and missing.errors == missing.requests > 0
        assert httpx.get(f"{static.url}/jwks.json").content == body


def test_load_refuses_anything_but_loopback():
    with pytest.raises(ValueError):
        load("http://example.com/", seconds=0.1)


def test_python_static_baseline_process(monkeypatch):
    monkeypatch.setenv("BENCH_NGINX", "none")
    from bench.suites import _Baseline

    body = b'{"keys":[{"kid":"x"}]}'
    with _Baseline(body) as base:
        assert base.kind == "python-http.server"
        assert httpx.get(base.url).content == body
        proc = base.proc
    assert proc.poll() is not None  # stopped
    assert not base.root.exists()


def test_cpu_time_of_a_process_from_proc():
    pid = os.getpid()
    stat0, run0 = cpu_seconds(pid), cpu_run_seconds(pid)
    end = time.process_time() + 0.3
    while time.process_time() < end:  # burn 0.3 s of CPU
        pass
    burnt_stat, burnt_run = cpu_seconds(pid) - stat0, cpu_run_seconds(pid) - run0
    assert 0.25 <= burnt_run < 2 and 0.2 <= burnt_stat < 2  # stat counts 10 ms ticks
    idle0 = cpu_run_seconds(pid)
    time.sleep(0.2)
    assert cpu_run_seconds(pid) - idle0 < 0.1


def test_slope_and_percentiles():
    assert slope([0, 1, 2, 3], [10, 12, 14, 16]) == pytest.approx(2.0)
    assert math.isnan(slope([1], [1]))
    assert pct(list(range(101)), 50) == 50 and pct(list(range(101)), 99) == 99


@pytest.mark.parametrize("alg, lo, hi", [("RS256", 400, 480), ("ES256", 180, 230), ("EdDSA", 140, 180)])
def test_jwk_sizes_and_the_envoy_cap(alg, lo, hi):
    per_key = bytes_per_key(alg, sample=8)
    assert lo < per_key < hi
    jwk = synthetic_jwk(alg)
    assert jwk["alg"] == alg and jwk["kid"]
    # DESIGN.md: ~77,000 RS256 keys, ~180,000 ES256, ~290,000 EdDSA fit in 32 MiB (order of magnitude)
    assert 50_000 < ENVOY_CAP / per_key < 300_000


def test_most_calls_in_any_window_span():
    from bench._ratelimit import _max_span

    assert _max_span([], 10) == 0
    assert _max_span([0.0, 1.0, 9.9, 10.0, 10.5], 10) == 4  # 1.0 .. 10.5; 0.0 and 10.0 are a window apart
    assert _max_span([float(i) for i in range(30)], 10) == 10


@pytest.mark.parametrize("nginx", ["nginx", "none"])
def test_the_ratelimit_upstream_times_each_call_and_paced_wrk_holds_its_rate(monkeypatch, nginx):
    """The accuracy measure counts what reached the upstream: every call, by
    path, timestamped; wrk paced by its Lua delay() stays near 1k req/s."""
    from bench._ratelimit import PACE_CONNECTIONS, _Upstream, paced

    if nginx == "nginx" and tool("nginx") is None:
        pytest.skip("nginx is not installed")
    monkeypatch.setenv("BENCH_NGINX", nginx)
    with _Upstream() as up:
        t0 = time.time()
        for path in ("/a", "/a", "/b"):
            assert httpx.get(f"http://{up.address}{path}").status_code == 200
        assert len(up.times("/a")) == 2 and len(up.times("/b")) == 1
        assert all(t0 - 1 <= t <= time.time() + 1 for t in up.times("/a"))
        if tool("wrk") is not None:
            r = paced(f"http://{up.address}/c", {}, 1)
            # wrk counts the answers it read before its deadline; the calls still in flight
            # then (at most one per connection) reached the upstream all the same
            assert r["paced"] and r["errors"] == 0
            assert r["requests"] <= len(up.times("/c")) <= r["requests"] + PACE_CONNECTIONS
            assert r["rps"] < 1100  # paced: about 10 connections x 100/s, never wrk's flat-out rate
