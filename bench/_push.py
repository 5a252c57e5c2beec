"""Issue 12: revocations and new keys pushed to Envoy over xDS vs pulled with
the JWKS, side by side in one run.

One `authserver serve` (xDS on) per tenant size, two Envoys from the configs
`authserver gateway envoy` prints for it: one with ``--xds`` (push), one
without (pull only), both with ``cache_duration`` at its default, 300 s.
Every event is timed on both Envoys at once; the pull Envoy is given a short,
bounded wait (it would otherwise take up to 300 s per event) and the result
says how many events it caught within it.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import threading
import time
from collections.abc import Iterator

import httpx

from authserver_devtools import free_port, wait_until

from ._common import cpu_run_seconds, cpu_seconds, load, machine_info, pct, progress, rss_bytes
from ._stack import AuthServer, Gateway

TENANT = "default"
ALG = "EdDSA"  # what the million suite uses: 1M keys fit Envoy and the server
CACHE_S = 300  # AUTHSERVER_GATEWAY_CACHE_SECONDS default, and the generated config's cache_duration
SHARD_SIZE = 1024  # as the million suite (what `authserver tenant shards --auto` gives)
OLD_S = 3600  # seeded keys were published this long ago: past the push window, only in the pulled JWKS
STREAM_RATE = 10.0  # revocations per second during the latency runs and the CPU measurement
# offered request rate of the latency runs: an unsaturated Envoy, as in production; a
# saturated one (back-to-back requests) measures the machine's other load more than pushes
LOAD_RATE = 1000.0
LOAD_CONNECTIONS = 10
POLL_S = 0.005


def _gate(tenant: str = TENANT) -> str:
    """The pushed removal buckets' accepted updates (a regex over Envoy's stat names)."""
    return rf"extension_config_discovery\.http_filter\.authserver\.removed\.{tenant}\.\d+\.update_success$"


def _recent(tenant: str = TENANT) -> str:
    """The pushed recent-key buckets' accepted updates."""
    return rf"extension_config_discovery\.http_filter\.authserver\.recent\.{tenant}\.\d+\.update_success$"


def _sizes(quick: bool, max_keys: int | None) -> list[int]:
    if quick:
        return [2048]  # two shards: the sharded path, small
    return [1000, min(1_000_000, max(max_keys or 1 << 62, 8000))]


def push(quick: bool, max_keys: int | None = None) -> dict:
    events = 4 if quick else 50
    out: dict = {
        "machine": machine_info(),  # also when merged into results of other runs (--merge)
        "alg": ALG, "cache_duration_s": CACHE_S, "events": events,
        "pull_cap_s": 0.5 if quick else 2.0, "push_cap_s": 5.0 if quick else 10.0,
        "poll_interval_s": POLL_S, "stream_rate_per_s": STREAM_RATE,
        "load_seconds": 1 if quick else 6, "load_rounds": 1 if quick else 5, "load_rate": LOAD_RATE,
        "cpu_pushes": 10 if quick else 100,
        "sizes": [],
    }
    for n in _sizes(quick, max_keys):
        out["sizes"].append(_one_size(n, out, quick))
    out["note"] = (
        "One `authserver serve` (SQLite, xDS on loopback) per size and two Envoys (one worker each) from "
        "`authserver gateway envoy` for its tenant, answering 200 themselves: push = with `--xds`, pull = "
        f"the same without; cache_duration {CACHE_S} s (the default). Keys: {ALG}; the tenant's bulk keys are "
        f"real public keys whose private halves were dropped, seeded {OLD_S // 60} min old (outside the push "
        "window) before the server starts, in shards of "
        f"{SHARD_SIZE} past 1,024 keys; every timed key is a real key minted through the API. An event is "
        "timed from the API call's return to the first answer with the wanted status, polled on both Envoys "
        f"every ~{POLL_S * 1000:g} ms; the pull Envoy gets at most {out['pull_cap_s']} s per event. Latency: wrk "
        f"at ~{LOAD_RATE:,.0f} req/s ({LOAD_CONNECTIONS} connections) on the push Envoy with a valid key, "
        f"no pushes (A) vs {STREAM_RATE:g} revocations/s of other keys (B), "
        "and the pull Envoy during the same stream (C: the server's work without pushes)."
    )
    return out


def _one_size(n: int, opts: dict, quick: bool) -> dict:
    shards = -(-n // SHARD_SIZE) if n > SHARD_SIZE else 1
    xds_port = free_port()
    env = {"AUTHSERVER_XDS_PORT": str(xds_port), "AUTHSERVER_XDS_NODES": f"authserver-gateway-{TENANT}={TENANT}"}
    row: dict = {"keys": n, "shards": shards}
    stream_kids = opts["cpu_pushes"] + 2 * opts["load_rounds"] * int(opts["load_seconds"] * STREAM_RATE * 1.5) + 50
    with AuthServer(env) as srv, contextlib.ExitStack() as stack:
        from .suites import _seed  # the seeding the other suites use

        srv.create_tenant(TENANT, ALG)
        if shards > 1:
            srv.cli("tenant", "shards", TENANT, "--count", str(shards))  # before the keys: no cache to load
        t0 = time.perf_counter()
        old = _seed(srv.dir / "bench.db", TENANT, ALG, n, age_s=OLD_S, shard_count=shards, keep=stream_kids,
                    desc=f"push: seeding {n:,} keys")
        row["seed_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        srv.start(timeout=3600)
        row["server_start_s"] = round(time.perf_counter() - t0, 1)
        row["server_rss"] = rss_bytes(srv.proc.pid)
        api = stack.enter_context(httpx.Client(base_url=srv.url, headers=srv.headers(), timeout=60))
        # real keys minted before the Envoys start: both Envoys' pulled JWKS hold them
        minted = [_mint(api) for _ in range(opts["events"] + 1)]
        load_key, revoke_keys = minted[0], minted[1:]

        gws = {}
        for name, xds in (("push", f"127.0.0.1:{xds_port}"), ("pull", None)):
            gw = stack.enter_context(Gateway(tenant_id=TENANT, server=srv, xds=xds))
            t0 = time.perf_counter()
            gw.start(load_key, timeout=3600)
            # every provider has its set (fetches run in the background and are retried)
            wait_until(lambda gw=gw: gw.counter("jwt_authn.jwks_fetch_success") >= shards + (shards > 1), 3600,
                       interval=0.5, what=f"{name} Envoy fetched every shard", alive=gw.envoy.alive)
            if xds:
                wait_until(lambda gw=gw: gw.counters(_gate()) >= 1 and gw.counters(_recent()) >= 1, 60,
                           interval=0.05, what="push Envoy took its first push", alive=gw.envoy.alive)
            row[f"{name}_envoy_ready_s"] = round(time.perf_counter() - t0, 1)
            gws[name] = gw
        clients = {name: stack.enter_context(httpx.Client(base_url=gw.url.rsplit("/", 1)[0], timeout=10))
                   for name, gw in gws.items()}
        for k in minted:
            for name in gws:
                wait_until(lambda k=k, name=name: _status(clients[name], k) == 200, 30, interval=0.05,
                           what=f"{name} Envoy accepts a minted key")
        row["envoy_rss"] = {name: rss_bytes(gw.envoy.pid) for name, gw in gws.items()}
        stream = iter(old)
        row["per_push"] = _per_push(srv, api, gws, stream, opts["cpu_pushes"])
        row["revoke"] = _events("revoke", api, clients, revoke_keys, opts, gws["push"])
        row["mint"] = _events("mint", api, clients, opts["events"], opts, gws["push"])
        row["latency"] = _latency(srv, api, gws, load_key, stream, opts)
        row["pull_envoy_refreshed"] = gws["pull"].counter("jwt_authn.jwks_fetch_success") - (shards + (shards > 1))
        row["server"] = {
            "pushes": srv.metric("authserver_xds_pushes_total"),
            "push_bytes": srv.metric("authserver_xds_push_bytes_total"),
            "nacks": srv.metric("authserver_xds_nacks_total"),
            "change_to_ack_mean_ms": round(1000 * srv.metric("authserver_xds_push_seconds_sum")
                                           / max(1.0, srv.metric("authserver_xds_push_seconds_count")), 2),
        }
        row["server_rss_end"] = rss_bytes(srv.proc.pid)
        if quick:  # the whole chain really worked
            assert row["revoke"]["push"]["caught"] == row["revoke"]["push"]["n"], row["revoke"]
            assert row["mint"]["push"]["caught"] == row["mint"]["push"]["n"], row["mint"]
    return row


def _mint(api: httpx.Client) -> str:
    r = api.post("/v1/keys", json={})
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


def _status(client: httpx.Client, key: str) -> int:
    return client.get("/bench", headers={"Authorization": f"Bearer {key}"}).status_code


def _kid(key: str) -> str:
    import keys.hazmat

    return keys.hazmat.unverified_kid(key)


def _watch(clients: dict[str, httpx.Client], key: str, want: int, t0: float,
           caps: dict[str, float]) -> dict[str, float | None]:
    """Seconds from ``t0`` until each Envoy answers ``want`` for ``key``, or
    None when it did not within its cap; both Envoys polled in turn."""
    pending = dict(caps)
    found: dict[str, float | None] = {}
    while pending:
        for name in list(pending):
            if _status(clients[name], key) == want:
                found[name] = time.perf_counter() - t0
                del pending[name]
            elif time.perf_counter() - t0 > pending[name]:
                found[name] = None
                del pending[name]
        time.sleep(POLL_S)
    return found


def _events(kind: str, api: httpx.Client, clients: dict[str, httpx.Client], keys_or_count: list[str] | int,
            opts: dict, push_gw: Gateway) -> dict:
    """revoke: revoke returned -> Envoy refuses (401); mint: mint returned -> Envoy accepts (200).

    Also records, per event, how many JWKS fetches the push Envoy made meanwhile
    (its refreshes, every cache_duration, share its main thread with xDS updates)."""
    caps = {"push": opts["push_cap_s"], "pull": opts["pull_cap_s"]}
    times: dict[str, list[float | None]] = {"push": [], "pull": []}
    fetches: list[int] = []
    rng = random.Random(12)
    items = keys_or_count if isinstance(keys_or_count, list) else range(keys_or_count)
    for item in progress(items, f"push: {kind} events"):
        time.sleep(rng.uniform(0.05, 0.3))  # no lockstep with the server's 0.25 s tick
        f0 = push_gw.counter("jwt_authn.jwks_fetch_success") + push_gw.counter("jwt_authn.jwks_fetch_failed")
        if kind == "revoke":
            key = str(item)
            r = api.delete(f"/v1/keys/{_kid(key)}")
            assert r.status_code == 200, r.text
            t0 = time.perf_counter()
            found = _watch(clients, key, 401, t0, caps)
        else:
            key = _mint(api)
            t0 = time.perf_counter()
            found = _watch(clients, key, 200, t0, caps)
        for name in times:
            times[name].append(found[name])
        fetches.append(int(push_gw.counter("jwt_authn.jwks_fetch_success")
                           + push_gw.counter("jwt_authn.jwks_fetch_failed") - f0))
    return {**{name: _stats(ts, caps[name]) for name, ts in times.items()}, "push_envoy_jwks_fetches": fetches}


def _stats(times: list[float | None], cap: float) -> dict:
    caught = [t * 1000 for t in times if t is not None]
    out: dict = {"n": len(times), "caught": len(caught), "cap_s": cap,
                 "within_200ms": sum(t <= 200 for t in caught), "within_1s": sum(t <= 1000 for t in caught)}
    for name, p in (("p50_ms", 50), ("p99_ms", 99)):
        out[name] = round(pct(caught, p), 1) if caught else None
    out["max_ms"] = round(max(caught), 1) if caught else None
    out["samples_ms"] = [None if t is None else round(t * 1000, 1) for t in times]
    return out


@contextlib.contextmanager
def _revocations(api_url: str, headers: dict[str, str], kids: Iterator[str], rate: float) -> Iterator[list[int]]:
    """Revoke keys at ``rate`` per second in a thread until the block ends;
    yields a one-item list with the count done (filled in at the end)."""
    stop = threading.Event()
    done = [0]
    if rate <= 0:
        yield done
        return

    def run() -> None:
        with httpx.Client(base_url=api_url, headers=headers, timeout=60) as c:
            start = time.perf_counter()
            while not stop.is_set():
                kid = next(kids)
                r = c.delete(f"/v1/keys/{kid}")
                assert r.status_code == 200, r.text
                done[0] += 1
                stop.wait(max(0.0, start + done[0] / rate - time.perf_counter()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join(timeout=60)


def _per_push(srv: AuthServer, api: httpx.Client, gws: dict[str, Gateway], kids: Iterator[str], count: int) -> dict:
    """Bytes (server metrics) and Envoy CPU time (/proc/PID/stat) per push:
    ``count`` revocations of old keys (each changes the gate only), at
    STREAM_RATE/s, minus the Envoy's idle CPU over as long a time."""
    push, pull = gws["push"], gws["pull"]
    seconds = count / STREAM_RATE

    def cpu() -> tuple[float, float, float]:  # push Envoy (stat, schedstat), pull Envoy (schedstat)
        return cpu_seconds(push.envoy.pid), cpu_run_seconds(push.envoy.pid), cpu_run_seconds(pull.envoy.pid)

    def applied() -> float:
        return push.counters(_gate()) + push.counters(_recent())

    c0 = cpu()
    time.sleep(seconds)
    idle_rate = [(b - a) / seconds for a, b in zip(c0, cpu(), strict=True)]
    fetches0, applied0 = push.counter("jwt_authn.jwks_fetch_success"), applied()
    pushes0, bytes0 = srv.metric("authserver_xds_pushes_total"), srv.metric("authserver_xds_push_bytes_total")
    c0 = cpu()
    start = time.perf_counter()
    for i in range(count):
        r = api.delete(f"/v1/keys/{next(kids)}")
        assert r.status_code == 200, r.text
        time.sleep(max(0.0, start + (i + 1) / STREAM_RATE - time.perf_counter()))
    wait_until(lambda: applied() - applied0 >= srv.metric("authserver_xds_pushes_total") - pushes0, 30,
               interval=0.05, what="Envoy applied every push")
    elapsed = time.perf_counter() - start
    used = [b - a for a, b in zip(c0, cpu(), strict=True)]
    idle = [r * elapsed for r in idle_rate]
    pushes = srv.metric("authserver_xds_pushes_total") - pushes0
    done = applied() - applied0
    pushed_bytes = srv.metric("authserver_xds_push_bytes_total") - bytes0

    def per_push(i: int) -> float | None:
        return round(1000 * (used[i] - idle[i]) / done, 3) if done else None

    return {
        "revocations": count, "pushes": int(pushes), "applied": int(done), "seconds": round(elapsed, 2),
        "bytes_per_push": round(pushed_bytes / pushes) if pushes else None,
        # /proc/PID/stat utime+stime (10 ms ticks) and the threads' schedstat (ns), idle time subtracted
        "envoy_cpu_ms_per_push_stat": per_push(0), "envoy_cpu_ms_per_push": per_push(1),
        "envoy_cpu_s": round(used[1], 4), "envoy_idle_cpu_s": round(idle[1], 4),
        "pull_envoy_cpu_s": round(used[2], 4), "pull_envoy_idle_cpu_s": round(idle[2], 4),
        "jwks_refreshes_during": int(push.counter("jwt_authn.jwks_fetch_success") - fetches0),
    }


def _latency(srv: AuthServer, api: httpx.Client, gws: dict[str, Gateway], key: str, kids: Iterator[str],
             opts: dict) -> dict:
    """wrk on the push Envoy with a valid key: no pushes (A), during STREAM_RATE
    revocations/s (B); the pull Envoy during the same stream (C). Rounds alternate."""
    seconds, hdr = opts["load_seconds"], {"Authorization": f"Bearer {key}"}
    runs: dict[str, list[dict]] = {"none": [], "pushes": [], "pull_stream": []}
    closed = "http.ingress_http.downstream_cx_destroy_local_active_rq"
    closed0 = gws["push"].counter(closed)
    pushes_during = 0
    def run(label: str, gw: Gateway, stream: bool) -> None:
        # an Envoy's JWKS refresh (every cache_duration) during a run costs it CPU: recorded per run
        f0 = gw.counter("jwt_authn.jwks_fetch_success")
        with _revocations(srv.url, srv.headers(), kids, STREAM_RATE if stream else 0.0) as done:
            result = load(gw.url, hdr, seconds=seconds, connections=LOAD_CONNECTIONS, rate=LOAD_RATE).as_dict()
        runs[label].append({**result, "revocations": done[0],
                            "jwks_refreshes": int(gw.counter("jwt_authn.jwks_fetch_success") - f0)})

    for _ in progress(range(opts["load_rounds"]), "push: latency rounds"):
        run("none", gws["push"], False)
        p0 = srv.metric("authserver_xds_pushes_total")
        run("pushes", gws["push"], True)
        pushes_during += int(srv.metric("authserver_xds_pushes_total") - p0)
        run("pull_stream", gws["pull"], True)

    def med(label: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[label])

    def total(label: str, field: str) -> int:
        return sum(r[field] for r in runs[label])

    out: dict = {label: {"p50_ms": med(label, "p50_ms"), "p99_ms": med(label, "p99_ms"),
                         "rps": round(med(label, "rps")), "requests": total(label, "requests"),
                         "wrong_status": total(label, "wrong_status"), "socket_errors": total(label, "socket_errors"),
                         "runs": runs[label]} for label in runs}
    out["p99_ratio_pushes_to_none"] = round(out["pushes"]["p99_ms"] / out["none"]["p99_ms"], 3)
    out["p50_ratio_pushes_to_none"] = round(out["pushes"]["p50_ms"] / out["none"]["p50_ms"], 3)
    out["p99_ratio_pull_stream_to_none"] = round(out["pull_stream"]["p99_ms"] / out["none"]["p99_ms"], 3)
    out["pushes_during"] = pushes_during
    out["envoy_closed_active_connections"] = int(gws["push"].counter(closed) - closed0)
    return out
