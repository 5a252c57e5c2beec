"""Issue 13: per-key rate limits and usage at the gateway, side by side in one run.

Two `authserver serve` replicas with their gRPC port on (xDS, rate-limit and
access-log services), one SQLite file and the real Redis shared; Envoys from
`authserver gateway envoy` in front of one upstream (nginx answering 200, or a
Python stand-in):

- ``latency``: the same Envoy config with and without ``--ratelimit`` (to
  replica 1), a key with a limit no request reaches, wrk paced to about
  1k req/s (each connection waits between requests), alternating runs;
- ``rls``: ShouldRateLimit calls from a gRPC client process against replica 1
  (keys with limits, so each decision is a Redis round trip), with the
  server's CPU time, so "per core" is per CPU second actually used;
- ``accuracy``: one key limited to 100 per window, two Envoys (one per
  replica) offered ~1,000 req/s in total; the calls that reached the upstream,
  counted per limiter window (windows are aligned to the epoch);
- ``usage``: access-log entries from a gRPC client process (real key ids)
  into replica 2 with its CPU time; and a call through Envoy (logging to
  replica 2) until `GET /v1/keys/{id}` on replica 1 shows its last_used_at.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from authserver.ratelimit import key_bucket
from authserver_devtools import death_signal_preexec, free_port, stop_process, wait_until

from ._common import cpu_run_seconds, load, machine_info, pct, progress, tool
from ._stack import AuthServer, Gateway

TENANT = "default"
NODE = f"authserver-gateway-{TENANT}"
ALG = "ES256"
CHECKOUT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# BENCH_PIN_ENVOY=CPU: every Envoy here on that one core (all threads, as `taskset -a -p`), so on a small
# machine the gateways do not wait for a core behind the servers and the load generator; with and
# without the filter alike. Unset: the scheduler places them.
PIN_ENVOY = os.environ.get("BENCH_PIN_ENVOY")
GENEROUS = [{"limit": 10**9, "window_seconds": 60}]  # never reached: every call is a Redis round trip that passes
RATE = 1000  # req/s offered, in total
# each connection waits DELAY_MS between requests (wrk's delay(), after the answer):
# enough of them that a few ms of latency barely lowers the rate offered
PACE_CONNECTIONS = 50
DELAY_MS = 1000 * PACE_CONNECTIONS // RATE

QUICK = {"latency_seconds": 1, "latency_rounds": 1, "rls_seconds": 1, "rls_rounds": 1, "rls_keys": 4,
         "window_s": 1, "windows": 3, "als_seconds": 1, "delay_samples": 2}
FULL = {"latency_seconds": 10, "latency_rounds": 3, "rls_seconds": 10, "rls_rounds": 3, "rls_keys": 20,
        "window_s": 10, "windows": 4, "als_seconds": 10, "delay_samples": 10}
LIMIT = 100


def ratelimit(quick: bool) -> dict:
    opts = QUICK if quick else FULL
    _need_redis()
    out: dict = {"machine": machine_info(), "options": opts, "rate_offered": RATE, "limit": LIMIT,
                 "redis": REDIS_URL.rsplit("@", 1)[-1]}
    grpc1, grpc2 = free_port(), free_port()
    lean1, lean2 = free_port(), free_port()  # the rate-limit service's lean transport (AUTHSERVER_RATELIMIT_PORT)
    common = {"AUTHSERVER_XDS_NODES": f"{NODE}={TENANT}", "AUTHSERVER_REDIS_URL": REDIS_URL,
              "AUTHSERVER_REDIS_NAMESPACE": f"bench-rl-{secrets.token_hex(4)}"}
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(_Upstream())
        r1 = stack.enter_context(AuthServer({**common, "AUTHSERVER_XDS_PORT": str(grpc1),
                                             "AUTHSERVER_RATELIMIT_PORT": str(lean1)}))
        r1.create_tenant(TENANT, ALG)
        r1.start()
        api = stack.enter_context(httpx.Client(base_url=r1.url, headers=r1.headers(), timeout=60))
        # every key before replica 2 and the Envoys start: both replicas' caches and every JWKS have them
        fast = _mint(api, "latency", GENEROUS)
        limited = [_mint(api, f"rls-{i}", GENEROUS) for i in range(opts["rls_keys"])]
        window = opts["window_s"]
        acc = _mint(api, "accuracy", [{"limit": LIMIT, "window_seconds": window}])
        fresh = [_mint(api, f"delay-{i}", None) for i in range(opts["delay_samples"])]
        r2 = stack.enter_context(AuthServer({**common, "AUTHSERVER_XDS_PORT": str(grpc2),
                                             "AUTHSERVER_RATELIMIT_PORT": str(lean2)},
                                            db_url=r1.env["AUTHSERVER_DATABASE_URL"]))
        r2.admin_key = r1.admin_key
        specs = [(r1, ()), (r1, ("--ratelimit", f"127.0.0.1:{lean1}")),
                 (r2, ("--ratelimit", f"127.0.0.1:{lean2}", "--accesslog", f"127.0.0.1:{grpc2}"))]
        r2.launch()  # boots while the Envoy configs are made
        with ThreadPoolExecutor(3) as pool:  # each config is a CLI run; processes start in this thread only
            gws = list(pool.map(lambda spec: Gateway(tenant_id=TENANT, server=spec[0], upstream=upstream.address,
                                                     extra=spec[1]), specs))
        for gw in gws:
            stack.enter_context(gw)
        r2.ready()
        for gw in gws:
            gw.start(fast["key"], timeout=60)
            if PIN_ENVOY is not None:
                _pin(gw, int(PIN_ENVOY))
        out["envoy_pinned_cpu"] = None if PIN_ENVOY is None else int(PIN_ENVOY)
        gw_off, gw_on, gw_2 = gws
        gc0 = [_gc_pauses(r) for r in (r1, r2)]
        out["upstream"] = upstream.kind
        out["latency"] = _latency(gw_off, gw_on, fast["key"], opts)
        kids = [k["id"] for k in limited]
        out["rls"], out["rls_grpcio"] = _rls_side_by_side(r1, lean1, grpc1, kids, opts)
        out["rls_paced"], out["rls_grpcio_paced"] = _rls_side_by_side(r1, lean1, grpc1, kids, opts, rate=RATE)
        out["accuracy"] = _accuracy((gw_on, gw_2), upstream, acc["key"], window, opts["windows"],
                                    counted=f"{common['AUTHSERVER_REDIS_NAMESPACE']}:rl:{window}:"
                                            f"{key_bucket(TENANT, acc['id'])}")
        out["usage"] = {"ingestion": _ingestion(r2, grpc2, [k["id"] for k in limited], opts),
                        "last_used": _last_used(gw_2, api, fresh)}
        out["envoy_ratelimit"] = {name: {s: gw.counter(f"ratelimit.{s}") for s in
                                         ("ok", "over_limit", "error", "failure_mode_allowed")}
                                  for name, gw in (("on", gw_on), ("replica2", gw_2))}
        # the GC's passes during the runs (each stops the loop: over 50 ms, Envoy's calls fail open)
        out["gc_pauses"] = {name: {k: round(v - gc0[i][k], 3) for k, v in _gc_pauses(r).items()}
                            for i, (name, r) in enumerate((("replica1", r1), ("replica2", r2)))}
    out["goals"] = {
        "p99_added_ms": {"goal": "<= 1", "value": out["latency"]["p99_added_ms"]},
        "rls_decisions_per_cpu_s": {"goal": ">= 5000", "value": out["rls"]["decisions_per_server_cpu_s"]},
        "rls_decisions_per_cpu_s_at_1k": {"goal": ">= 5000",
                                          "value": out["rls_paced"]["decisions_per_server_cpu_s"]},
        "accuracy_worst_pct": {"goal": "within +-2", "value": out["accuracy"]["worst_error_pct"]},
        "als_entries_per_cpu_s": {"goal": ">= 20000", "value": out["usage"]["ingestion"]["entries_per_server_cpu_s"]},
        "last_used_delay_max_s": {"goal": "<= 5", "value": out["usage"]["last_used"]["max_s"]},
    }
    out["note"] = (
        f"Two `authserver serve` replicas (one SQLite file, the real Redis at {out['redis']}, gRPC on), Envoys "
        f"(one worker each) from `authserver gateway envoy` in front of {upstream.kind} answering 200"
        f"{'' if PIN_ENVOY is None else f', every Envoy pinned to CPU {PIN_ENVOY} (BENCH_PIN_ENVOY)'}. Latency: "
        f"wrk, {PACE_CONNECTIONS} connections each waiting {DELAY_MS} ms between requests (about {RATE} req/s; "
        "the achieved rate is reported), the same config with and without `--ratelimit`, alternating runs, "
        "medians. RLS: a gRPC client process (grpcio), 32 calls in flight, keys with a limit (each decision is "
        "a Redis round trip); per CPU second = decisions / the server process's CPU time (all threads); and the "
        f"same paced at {RATE} calls/s, open loop (as a gateway's traffic comes: few calls share a loop turn); "
        "on the lean transport (AUTHSERVER_RATELIMIT_PORT, what the Envoys here use) and on the grpcio server "
        f"(the xDS port), alternating, {opts['rls_rounds']} runs each, medians. "
        "Accuracy: "
        f"{LIMIT} per {window} s on one key, two Envoys (one per replica) each offered half of {RATE} req/s; "
        "allowed = calls that reached the upstream, per epoch-aligned window fully inside the run, beside the "
        "limiter's own count per window (read from Redis during the run) and the calls Envoy let through "
        "without an answer (past the filter's 50 ms timeout, failure_mode_deny false). Usage: an "
        "access-log client process (2 streams, 100 entries per message, real key ids) into replica 2; "
        "last_used_at: a call through the Envoy logging to replica 2, polled on replica 1 every 50 ms "
        f"(usage is written every {_flush_s()} s, Envoy sends logs every 0.5 s)."
    )
    return out


# --- the parts ---------------------------------------------------------------------

def _latency(gw_off: Gateway, gw_on: Gateway, key: str, opts: dict) -> dict:
    hdr = {"Authorization": f"Bearer {key}"}
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for i in progress(range(opts["latency_rounds"]), "ratelimit: latency rounds"):
        order = (("off", gw_off), ("on", gw_on)) if i % 2 == 0 else (("on", gw_on), ("off", gw_off))
        for name, gw in order:
            runs[name].append(paced(gw.url, hdr, opts["latency_seconds"]))
    out: dict = {}
    for name, rs in runs.items():
        out[name] = {"p50_ms": statistics.median(r["p50_ms"] for r in rs),
                     "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                     "rps": round(statistics.median(r["rps"] for r in rs)),
                     "errors": sum(r["errors"] for r in rs), "runs": rs}
    out["p50_added_ms"] = round(out["on"]["p50_ms"] - out["off"]["p50_ms"], 3)
    out["p99_added_ms"] = round(out["on"]["p99_ms"] - out["off"]["p99_ms"], 3)
    out["tool"] = runs["on"][0]["tool"]
    return out


class _CpuSampler:
    """A process's CPU time (all threads), sampled every 10 ms in a thread, so
    the CPU used over a span another process reports (its wall clock) can be read."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), cpu_run_seconds(self.pid)))
            self._stop.wait(0.01)

    def __enter__(self) -> _CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, t: float) -> float:
        """CPU seconds at wall time ``t`` (the nearest sample at or after it)."""
        return next((c for ts, c in self.samples if ts >= t), self.samples[-1][1])

    def between(self, t0: float, t1: float) -> float:
        return self.at(t1) - self.at(t0)


def _rls_side_by_side(srv: AuthServer, lean: int, grpc: int, kids: list[str], opts: dict,
                      rate: float | None = None) -> tuple[dict, dict]:
    """The two transports in alternating runs; each run's figures, and the
    median run (by decisions per CPU second) of each."""
    runs: dict[str, list[dict]] = {"lean": [], "grpcio": []}
    for i in range(opts["rls_rounds"]):
        order = ("lean", "grpcio") if i % 2 == 0 else ("grpcio", "lean")
        for name in order:
            runs[name].append(_rls(srv, lean if name == "lean" else grpc, kids, opts, rate))
    medians = []
    for name, got in runs.items():
        ranked = sorted(got, key=lambda r: r["decisions_per_server_cpu_s"] or 0)
        medians.append({**ranked[len(ranked) // 2], "transport": name,
                        "runs_decisions_per_server_cpu_s": [r["decisions_per_server_cpu_s"] for r in got]})
    lean_m, grpc_m = medians
    if lean_m["decisions_per_server_cpu_s"] and grpc_m["decisions_per_server_cpu_s"]:
        lean_m["vs_grpcio"] = round(lean_m["decisions_per_server_cpu_s"] / grpc_m["decisions_per_server_cpu_s"], 2)
    return lean_m, grpc_m


def _rls(srv: AuthServer, port: int, kids: list[str], opts: dict, rate: float | None = None) -> dict:
    """Saturated (32 calls in flight: calls share loop turns and Redis script
    calls), or ``rate`` calls a second, open loop, as Envoy's traffic comes."""
    assert srv.proc is not None
    d0 = srv.metric("authserver_ratelimit_decisions_total")
    with _CpuSampler(srv.proc.pid) as cpus:
        got = _grpc_load("rls", port, kids, opts["rls_seconds"], concurrency=32,
                         extra=("--rate", str(rate)) if rate else ())
        time.sleep(0.05)
    cpu = cpus.between(got["start"], got["end"])
    decisions = srv.metric("authserver_ratelimit_decisions_total") - d0
    return {**got, "server_decisions": int(decisions), "server_cpu_s": round(cpu, 3),
            "server_cpu_share": round(cpu / got["seconds"], 3),
            "decisions_per_s": round(got["calls"] / got["seconds"]),
            "decisions_per_server_cpu_s": round(decisions / cpu) if cpu else None,
            "server_cpu_us_per_decision": round(1e6 * cpu / decisions, 1) if decisions else None}


def _gc_pauses(srv: AuthServer) -> dict[str, float]:
    """The server's GC passes so far (authserver_gc_pause_seconds): all, full ones, over 50 ms, seconds."""
    text = httpx.get(f"{srv.url}/metrics", timeout=30,
                     headers={"Authorization": f"Bearer {srv.env['AUTHSERVER_METRICS_TOKEN']}"}).text
    got = {"passes": 0.0, "full_passes": 0.0, "over_50ms": 0.0, "seconds": 0.0}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("authserver_gc_pause_seconds_count"):
            got["passes"] += float(value)
            if 'generation="2"' in name:
                got["full_passes"] += float(value)
        elif name.startswith("authserver_gc_pause_seconds_sum"):
            got["seconds"] += float(value)
        elif name.startswith("authserver_gc_pause_seconds_bucket"):
            # over 50 ms: every pass (+Inf) minus those within 0.05
            got["over_50ms"] += float(value) if 'le="+Inf"' in name else -float(value) if 'le="0.05"' in name else 0
    got["seconds"] = round(got["seconds"], 3)
    return got


def _accuracy(gws: tuple[Gateway, Gateway], upstream: _Upstream, key: str, window: int, windows: int,
              counted: str) -> dict:
    """``counted``: the Redis key prefix of the limiter's per-window counts
    (``PREFIX:INDEX``), read during the run: what the service let through,
    beside what reached the upstream. The difference is what Envoy let through
    without an answer (past its timeout, ``failure_mode_deny`` false)."""
    hdr = {"Authorization": f"Bearer {key}"}
    envoy0 = [_rl_counters(gw) for gw in gws]
    start = time.time()
    first = math.ceil(start / window + 0.05) * window  # the first whole window the load covers
    seconds = first + windows * window + 0.3 - start
    results: list[dict] = [{}, {}]

    def run(i: int) -> None:
        results[i] = paced(gws[i].url + "/accuracy", hdr, seconds, connections=PACE_CONNECTIONS // 2,
                           expect_ok=False)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    with _WindowCounts(counted, window) as limiter_counts:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    envoy = [{k: v - envoy0[i][k] for k, v in _rl_counters(gw).items()} for i, gw in enumerate(gws)]
    times = sorted(upstream.times("/bench/accuracy"))
    counts = [sum(first + i * window <= t < first + (i + 1) * window for t in times) for i in range(windows)]
    errors = [round(100 * (c - LIMIT) / LIMIT, 1) for c in counts]
    offered = sum(r["requests"] for r in results)
    first_idx = int(first // window)
    return {"window_s": window, "windows": windows, "allowed_per_window": counts, "error_pct": errors,
            "worst_error_pct": max(errors, key=abs),
            # the service's own count per window (Redis), and Envoy's fail-open calls over the run
            "counted_by_limiter_per_window": [limiter_counts.get(first_idx + i) for i in range(windows)],
            "envoy_during": envoy,
            "failure_mode_allowed": sum(e["failure_mode_allowed"] for e in envoy),
            "max_in_any_window_span": _max_span(times, window),
            "offered_rps": round(sum(r["rps"] for r in results)), "offered": offered,
            "allowed_total": len(times), "refused_total": sum(r["non2xx"] for r in results),
            "socket_errors": sum(r["socket_errors"] for r in results), "envoys": results}


def _rl_counters(gw: Gateway) -> dict[str, int]:
    return {s: gw.counter(f"ratelimit.{s}") for s in ("ok", "over_limit", "error", "failure_mode_allowed")}


class _WindowCounts(dict[int, int]):
    """The limiter's count of each window of one bucket, read from Redis every
    0.2 s while the load runs (a window's key expires two windows after it)."""

    def __init__(self, prefix: str, window: int) -> None:
        super().__init__()
        self.prefix, self.window = prefix, window
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        try:
            while True:
                idx = int(time.time() // self.window)
                for i, v in zip((idx - 1, idx), r.mget([f"{self.prefix}:{idx - 1}", f"{self.prefix}:{idx}"]),
                                strict=True):
                    if v is not None:
                        self[i] = max(self.get(i, 0), int(v))
                if self._stop.wait(0.2):
                    break
        finally:
            r.close()

    def __enter__(self) -> _WindowCounts:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the last window's last calls
        self._stop.set()
        self._thread.join()


def _max_span(times: list[float], window: float) -> int:
    """The most calls in any ``window`` seconds (not only the aligned ones)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _ingestion(srv: AuthServer, port: int, kids: list[str], opts: dict) -> dict:
    assert srv.proc is not None
    name = "authserver_accesslog_entries_total"
    e0 = srv.metric(name)
    with _CpuSampler(srv.proc.pid) as cpus:
        got = _grpc_load("als", port, kids, opts["als_seconds"], concurrency=2)
        # what was sent is counted before the clock stops (the server acknowledges a stream at its end)
        wait_until(lambda: srv.metric(name) - e0 >= got["entries"], 30, interval=0.05, what="entries counted")
        done = time.time()
        time.sleep(0.05)
    elapsed = done - got["start"]
    cpu = cpus.between(got["start"], done)
    counted = srv.metric(name) - e0
    return {**got, "server_entries": int(counted), "seconds_to_counted": round(elapsed, 2),
            "server_cpu_s": round(cpu, 3), "server_cpu_share": round(cpu / elapsed, 3),
            "entries_per_s": round(counted / elapsed),
            "entries_per_server_cpu_s": round(counted / cpu) if cpu else None}


def _last_used(gw: Gateway, api: httpx.Client, fresh: list[dict]) -> dict:
    """A call through the Envoy that logs to replica 2, then GET /v1/keys/{id}
    on replica 1 (the shared database) every 50 ms until last_used_at is set."""
    import random

    rng = random.Random(13)
    delays = []
    for k in progress(fresh, "ratelimit: last_used_at delay"):
        time.sleep(rng.uniform(0.1, 0.6))  # not in step with the flush timer
        assert gw.status(k["key"]) == 200
        t0 = time.perf_counter()
        wait_until(lambda k=k: api.get(f"/v1/keys/{k['id']}").json()["last_used_at"] is not None, 30,
                   interval=0.05, what="last_used_at shows the call")
        delays.append(time.perf_counter() - t0)
    return {"n": len(delays), "p50_s": round(pct(delays, 50), 2), "max_s": round(max(delays), 2),
            "samples_s": [round(d, 3) for d in delays], "flush_interval_s": _flush_s()}


# --- tools -------------------------------------------------------------------------

def _flush_s() -> float:
    """AUTHSERVER_USAGE_FLUSH_SECONDS as the replicas have it (the harness does not set it)."""
    from authserver.settings import Settings

    return float(os.environ.get("AUTHSERVER_USAGE_FLUSH_SECONDS") or Settings().usage_flush_seconds)


def paced(url: str, headers: dict[str, str], seconds: float, connections: int = PACE_CONNECTIONS,
          expect_ok: bool = True) -> dict:
    """``load`` paced to ``connections`` x 1000/DELAY_MS req/s (each connection
    waits DELAY_MS between requests: wrk's ``delay()``, not in the latency),
    for at least ``seconds``; without wrk, the asyncio generator, paced alike."""
    r = load(url, headers, seconds=math.ceil(seconds), connections=connections,
             rate=connections * 1000 / DELAY_MS).as_dict()
    out = {**r, "non2xx": r["wrong_status"], "paced": True, "connections": connections, "delay_ms": DELAY_MS}
    if not expect_ok:  # refusals are the point: only socket errors are errors
        out["errors"] = r["socket_errors"]
    return out


def _grpc_load(mode: str, port: int, kids: list[str], seconds: float, concurrency: int,
               extra: tuple[str, ...] = ()) -> dict:
    import json

    # --kids=...: a kid may start with "-", which argparse would take for an option
    cmd = [sys.executable, "-m", "bench._grpc_load", mode, "--target", f"127.0.0.1:{port}", f"--kids={','.join(kids)}",
           "--seconds", str(seconds), "--concurrency", str(concurrency), *extra]
    p = subprocess.run(cmd, cwd=CHECKOUT, capture_output=True, text=True, timeout=seconds + 120,
                       preexec_fn=death_signal_preexec())
    if p.returncode != 0:
        raise RuntimeError(f"{mode} load client failed: {p.stderr[-2000:]}")
    got: dict = json.loads(p.stdout.strip().splitlines()[-1])
    got["seconds"] = round(got["seconds"], 3)
    return got


def _mint(api: httpx.Client, name: str, limits: list[dict] | None) -> dict:
    body: dict = {"name": name, **({"rate_limits": limits} if limits else {})}
    r = api.post("/v1/keys", json=body)
    assert r.status_code == 201, r.text
    j = r.json()
    return {"id": j["id"], "key": j["key"]}


def _pin(gw: Gateway, cpu: int) -> None:
    """Every thread of the gateway's Envoy on ``cpu``."""
    pid = gw.envoy.pid
    assert pid is not None
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), {cpu})


def _need_redis() -> None:
    from urllib.parse import urlsplit

    u = urlsplit(REDIS_URL)
    try:
        socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=2).close()
    except OSError as exc:
        raise RuntimeError(f"the ratelimit suite needs Redis at {REDIS_URL} (BENCH_REDIS_URL): {exc}") from None


class _Upstream:
    """Answers 200 to everything and records when each request arrived and its
    path: nginx (one worker, a buffered access log with $msec) when installed,
    else a threaded Python server in this process."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bench-upstream-"))
        self.port = free_port()
        self.kind = "nginx" if tool("nginx") else "python-http.server"
        self.proc: subprocess.Popen | None = None
        self.httpd: ThreadingHTTPServer | None = None
        self._times: list[tuple[float, str]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> _Upstream:
        root = self.root
        if self.kind == "nginx":
            conf = root / "nginx.conf"
            conf.write_text(f"""
worker_processes 1; daemon off; pid {root}/nginx.pid; error_log {root}/error.log;
events {{ worker_connections 4096; }}
http {{ client_body_temp_path {root}; proxy_temp_path {root}; fastcgi_temp_path {root};
  uwsgi_temp_path {root}; scgi_temp_path {root}; keepalive_requests 1000000;
  log_format arrival '$msec $uri';
  access_log {root}/access.log arrival buffer=64k flush=200ms;
  server {{ listen {self.address}; location / {{ default_type text/plain; return 200 "ok"; }} }} }}
""")
            cmd = [str(tool("nginx")), "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         stdin=subprocess.DEVNULL, preexec_fn=death_signal_preexec())
        else:
            times = self._times

            class Handler(BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"
                disable_nagle_algorithm = True  # headers and body go out as two writes

                def do_GET(self) -> None:  # noqa: N802
                    times.append((time.time(), self.path.split("?")[0]))
                    self.send_response(200)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

                def log_message(self, *args: object) -> None:
                    pass

            self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
            threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        try:
            wait_until(lambda: httpx.get(f"http://{self.address}/", timeout=1).status_code == 200, 20,
                       interval=0.05, what=f"{self.kind} upstream up",
                       alive=lambda: self.proc is None or self.proc.poll() is None)
        except BaseException:
            self.__exit__()
            raise
        return self

    def times(self, path: str) -> list[float]:
        """Arrival times (UNIX seconds) of the requests for ``path``."""
        if self.kind != "nginx":
            return [t for t, p in self._times if p == path]
        time.sleep(0.5)  # the log buffer's flush
        out = []
        for line in (self.root / "access.log").read_text().splitlines():
            t, _, p = line.partition(" ")
            if p == path:
                out.append(float(t))
        return out

    def __exit__(self, *exc: object) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        stop_process(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)
