"""Write results as JSON, a Markdown summary and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def _mib(b: float) -> str:
    return f"{b / 1048576:.1f} MiB"


def _n(x: float, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def _load_cells(d: dict) -> str:
    return f"{d['p50_ms']} / {d['p99_ms']}" + ("" if d.get("ok", True) else " (!)")


def markdown(results: dict) -> str:
    m = results["machine"]
    tools = (f"load generator {m.get('load_generator', 'wrk' if m.get('wrk') else 'python-asyncio')}, "
             f"JWKS baseline {m.get('static_baseline', 'nginx' if m.get('nginx') else 'python-http.server')}")
    out = [f"# Benchmark results ({'quick' if results['quick'] else 'full'} run)", "",
           f"{m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, Linux {m['kernel']}, "
           f"Python {m['python']}, Envoy {m['envoy']}; {tools}; everything on loopback, one Envoy worker "
           "(`--concurrency 1`). Ratios compare figures taken in the same run; the load generator shares the "
           "machine's cores.", ""]
    if results["quick"]:
        out += ["**Quick run**: small key counts, one algorithm, 1-2 s loads, a short Envoy cache. It proves the "
                "harness works; do not quote its numbers.", ""]
    opts = results.get("options") or {}
    if opts.get("max_keys"):
        out += [f"**Reduced scale**: key counts up to {opts['max_keys']:,} only (`--max-keys`).", ""]
    if results.get("errors"):
        out += ["## Failed suites", ""] + [f"- `{k}`: {v}" for k, v in results["errors"].items()] + [""]
    s = results["suites"]

    def section(name: str, render) -> None:
        if name not in s:
            return
        before = len(out)
        try:
            render(s[name])
        except (KeyError, TypeError, IndexError) as exc:  # e.g. an older results.json kept by --merge
            del out[before:]
            out.extend([f"## {name}", "", f"_(results in an older format: re-run this suite; {exc!r})_", ""])

    add = out.extend

    def _gateway(g: dict) -> None:
        add(["## Gateway (Envoy) memory and latency vs keys in one JWKS", "",
                "| alg | keys | JWKS | Envoy RSS | p50 / p99 ms, key first | p50 / p99 ms, key last | "
                "req/s first | req/s last |",
                "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: |"])
        for r in g["rows"]:
            out.append(f"| {r['alg']} | {r['keys']:,} | {_mib(r['jwks_bytes'])} | {_mib(r['envoy_rss'])} | "
                       f"{_load_cells(r['first'])} | {_load_cells(r['last'])} | {_n(r['first']['rps'])} | "
                       f"{_n(r['last']['rps'])} |")
        add(["", "| alg | Envoy RSS per key (slope) | JWKS bytes per key | keys under the 32 MiB cap | "
                "largest set | p50 / p99 key last there vs 1 key | req/s there vs 1 key |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"])
        for alg, v in g["summary"].items():
            out.append(f"| {alg} | {_n(v['rss_bytes_per_key'])} B | {v['jwks_bytes_per_key']} B | "
                       f"{v['max_keys_under_cap']:,} | {v['largest']:,} | {v.get('p50_last_vs_1_key', 'n/a')}x / "
                       f"{v['p99_last_vs_1_key']}x | {v.get('rps_last_vs_1_key', 'n/a')}x |")
        add(["", f"_{g['note']}_", ""])

    section("gateway", _gateway)

    def _million(x: dict) -> None:
        add(["## Past one JWKS: sharded tenant", "",
                f"{x['keys']:,} {x['alg']} keys in {x['shards']} shards of {x['keys_per_shard']:,} "
                f"(one provider per shard, picked by key prefix), {_mib(x['jwks_bytes'])} of JWKS. Envoy accepted the "
                f"first key after {x.get('first_call_s', 'n/a')} s and had every shard after {x['ready_s']} s "
                f"({x.get('jwks_fetch_failed_then_retried', 'n/a')} fetches timed out and were retried); the "
                "figures below are taken after that.", "",
                "| | p50 (ms) | p99 (ms) | req/s | Envoy RSS |", "| --- | ---: | ---: | ---: | ---: |",
                f"| {x['keys']:,} keys, sharded | {x['sharded']['p50_ms']} | {x['sharded']['p99_ms']} | "
                f"{_n(x['sharded']['rps'])} | {_mib(x['envoy_rss'])} |",
                f"| 1,000 keys, one JWKS | {x['baseline_1k']['p50_ms']} | {x['baseline_1k']['p99_ms']} | "
                f"{_n(x['baseline_1k']['rps'])} | {_mib(x['baseline_rss'])} |", "",
                f"p99 sharded / 1k: **{x['p99_ratio_sharded_to_1k']}** (goal: at most 1.10); p50 sharded / 1k: "
                f"{x.get('p50_ratio_sharded_to_1k', 'n/a')}; Envoy RSS per key: **{x['envoy_rss_bytes_per_key']} B** "
                f"(goal: 1M EdDSA keys under 2 GiB). _{x['note']}_", ""])

    section("million", _million)

    def _server_memory(sm: dict) -> None:
        add(["## Server memory per live key", "", "| alg | keys | authserver RSS | JWKS |",
                "| --- | ---: | ---: | ---: |"])
        add([f"| {r['alg']} | {r['keys']:,} | {_mib(r['server_rss'])} | {_mib(r['jwks_bytes'])} |"
                for r in sm["rows"]])
        add(["", "Slope: " + ", ".join(f"{a} {_n(v)} B/key" for a, v in sm["rss_bytes_per_key"].items())
                + f". _{sm['note']}_", ""])

    section("server_memory", _server_memory)

    def _jwks_serving(j: dict) -> None:
        base = j.get("baseline", "nginx")
        add(["## JWKS endpoint: authserver vs a static file", "",
                f"`{m.get('load_generator', 'wrk')}`, {j['connections']} connections, "
                f"{j['seconds_per_load']} s per load; the same bytes served by {base} from a file; "
                f"{j.get('rounds', 1)} alternating rounds (authserver, {base}), medians. CPU: the server's "
                "microseconds per request (a figure the other loads on the shared cores do not move).", "",
                "| keys | JWKS (gzip) | server | req/s | p50 (ms) | p99 (ms) | CPU us/request |",
                "| --- | ---: | --- | ---: | ---: | ---: | ---: |"])
        for row in j["sizes"]:
            size = f"{row['jwks_bytes']:,} B ({row['gzip_bytes']:,} B)"
            for label, d in (("authserver", row["ours"]), (base, row["baseline"]),
                             ("authserver, gzip (one run)", row.get("ours_gzip"))):
                if d:
                    keys = f"{row['keys']:,} {row.get('alg', j['alg'])}"
                    out.append(f"| {keys} | {size} | {label} | {_n(d['rps'])} | {d['p50_ms']} | "
                               f"{d['p99_ms']} | {d.get('cpu_us_per_request', '')} |")
        add([""] + [f"At {row['keys']:,} {row.get('alg', j['alg'])} keys: authserver / {base} req/s "
                    f"**{row['rps_ratio_ours_to_baseline']}**, "
                    f"p99 **{row['p99_ratio_ours_to_baseline']}**, CPU per request "
                    f"{row.get('cpu_ratio_ours_to_baseline', '-')}." for row in j["sizes"]])
        w = j.get("workers")
        if w:
            add(["", f"`serve --workers 2` vs one worker, {w['keys']:,} keys, alternating rounds: "
                     f"{_n(w['two_workers']['rps'])} vs {_n(w['one_worker']['rps'])} req/s "
                     f"(**{w['rps_ratio_two_to_one']}x**), p99 {w['two_workers']['p99_ms']} vs "
                     f"{w['one_worker']['p99_ms']} ms (wrk itself shares the {w.get('cores', 2)} cores)."])
            if w.get("ceiling_rps"):
                o, t = w["one_worker"], w["two_workers"]
                add([f"CPU per request (server / wrk): one worker {o['cpu_us_per_request']} / "
                     f"{o['loadgen_cpu_us_per_request']} us, two {t['cpu_us_per_request']} / "
                     f"{t['loadgen_cpu_us_per_request']} us; the cores' ceiling for server + wrk together "
                     f"{_n(w['ceiling_rps'])} req/s, which one worker reaches to "
                     f"**{round(w['one_worker_of_ceiling'] * 100)}%**"
                     + (": a second worker has no idle core to use, only contention (loop waits per 1,000 "
                        f"requests {o['voluntary_switches_per_1k']} -> {t['voluntary_switches_per_1k']})"
                        if w["one_worker_of_ceiling"] >= 0.8 else
                        ": other loads held the rest of the cores, and two processes win a bigger share of "
                        f"them than one (server CPU {o['server_cpu_pct']}% -> {t['server_cpu_pct']}% of a core)")
                     + ". The ratio is this machine's, not the server's scaling."])
        add(["", "Reflecting one change (revoke one key, publish another) and rendering again "
                 "(with gzip: the compressed answer as served, in chunks):", "",
                "| alg | keys | JWKS | segments | JWKSDocument median / p99 (ms) | with gzip | TenantKeys | "
                "TenantKeys + gzip | joining both bodies too |",
                "| --- | ---: | ---: | ---: | --- | --- | --- | --- | --- |"])

        def ms(rb: dict, name: str) -> str:
            d = rb.get(name)
            return f"{d['median_ms']} / {d['p99_ms']}" if d else "-"

        for rb in j["rebuild"]:
            out.append(f"| {rb['alg']} | {rb['keys']:,} | {_mib(rb['jwks_bytes'])} | {rb.get('segments', '-')} | "
                       f"{ms(rb, 'jwksdocument')} | {ms(rb, 'jwksdocument_with_gzip')} | {ms(rb, 'tenantkeys')} | "
                       f"{ms(rb, 'tenantkeys_with_gzip')} | {ms(rb, 'join_both_bodies')} |")
        add(["", f"_{j['note']}_", ""])

    section("jwks_serving", _jwks_serving)

    def _mint(mi: dict) -> None:
        raw = mi["raw_keygen_per_s"]
        add(["## Mint (RS256, key generation included)", "",
                "| clients | p50 (ms) | p99 (ms) | keys/s | vs raw generation, 2 threads |",
                "| ---: | ---: | ---: | ---: | ---: |"])
        add([f"| {lv['clients']} | {lv['p50_ms']} | {lv['p99_ms']} | {lv['keys_per_s']} | "
                f"{lv.get('vs_raw_2_threads', 'n/a')} |" for lv in mi["levels"]])
        add(["", f"Raw `cryptography` RSA-2048 generation, same run: {raw['1_thread']}/s in 1 thread, "
                f"{raw['2_threads']}/s in 2; best mint rate / raw 2-thread rate: **{mi['best_vs_raw_2_threads']}**."])
        st = mi.get("steady")
        if st:
            line = (f"Steady {st['rate_per_s']} mints/s: without pool p50 {st['no_pool']['p50_ms']} ms / p99 "
                    f"{st['no_pool']['p99_ms']} ms; with a 64-keypair pool p50 {st['pool']['p50_ms']} ms / p99 "
                    f"{st['pool']['p99_ms']} ms")
            if "p99_ci_ms" in st["pool"]:
                line += f" (n={st['pool']['n']}; 95% interval of that p99: {st['pool']['p99_ci_ms']} ms)"
            if "pool_relaxed" in st:
                line += (f"; the pool with `AUTHSERVER_DURABLE_MINTS=false` (commit without waiting for the disk) "
                         f"p50 {st['pool_relaxed']['p50_ms']} ms / p99 {st['pool_relaxed']['p99_ms']} ms")
            if "floor_eddsa" in st:
                line += (f"; the same request path with EdDSA (key generation ~0.03 ms), the floor a pool can "
                         f"reach: p50 {st['floor_eddsa']['p50_ms']} ms / p99 {st['floor_eddsa']['p99_ms']} ms")
            add(["", line + "."])
            if st.get("fsync"):
                fs = st["fsync"]
                add(["", f"fsync on the database's disk at the same rate, right after the pool run (a durable "
                         f"SQLite commit waits for one): p50 {fs['p50_ms']} ms / p99 {fs['p99_ms']} ms."])
            runs = [(label, st[key]) for key, label in (("no_pool", "no pool"), ("pool", "pool"),
                                                        ("pool_relaxed", "pool, not durable"),
                                                        ("floor_eddsa", "EdDSA")) if st.get(key, {}).get("stages")]
            if runs:
                names = list(dict.fromkeys(n for _, r in runs for n in r["stages"]))
                add(["", "Per stage, from the server's `Server-Timing` header (p50 / p99, ms; `auth`: routing, "
                         "body and admin key; `respond`: the answer serialized; the client's time adds the "
                         "HTTP round trip):", "",
                     "| stage | " + " | ".join(label for label, _ in runs) + " |",
                     "| --- |" + " ---: |" * len(runs)])
                add([f"| {n} | " + " | ".join(
                    f"{r['stages'][n]['p50_ms']} / {r['stages'][n]['p99_ms']}" if n in r["stages"] else "n/a"
                    for _, r in runs) + " |" for n in names])
        if mi.get("note"):
            add(["", f"_{mi['note']}_"])
        add([""])

    section("mint", _mint)

    def _propagation(p: dict) -> None:
        rv, ac, ia = p["revocation_s"], p["activation_s"], p["instant_activation_s"]

        def cell(d: dict, k: str) -> str:
            return str(d.get(k, "n/a"))

        add(["## Revocation and activation through Envoy", "",
                f"Envoy `cache_duration` **{p['cache_duration_s']} s** (shortened for the benchmark; the default "
                "is 300 s); Envoy polled with the key every ~20 ms.", "",
                "| | p50 (s) | p99 (s) | max (s) | n |", "| --- | ---: | ---: | ---: | ---: |",
                f"| revoke returned -> Envoy refuses | {rv['p50']} | {cell(rv, 'p99')} | {rv['max']} | {rv['n']} |",
                f"| mint returned -> Envoy accepts | {ac['p50']} | {cell(ac, 'p99')} | {ac['max']} | {ac['n']} |",
                f"| same, instant activation | {ia['p50']} | {cell(ia, 'p99')} | {ia['max']} | {ia['n']} |", "",
                f"With instant activation {ia['accepted_at_first_call']} of {ia['n']} new keys worked at the first "
                "call."])
        if p.get("note"):
            add(["", f"_{p['note']}_"])
        add([""])

    section("propagation", _propagation)

    def _push(x: dict) -> None:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:g}"

        cap = x["pull_cap_s"]
        add(["## Push (xDS) vs pull through Envoy", ""])
        pm = x.get("machine")
        if pm:  # merged into older results: say where this suite ran
            add([f"Measured {pm['date']} on {pm['cpu']}, {pm['cores']} cores, {pm['memory_gib']} GiB RAM, Linux "
                 f"{pm['kernel']}, Python {pm['python']}, Envoy {pm['envoy']}, load generator "
                 f"{pm['load_generator']}.", ""])
        add([f"Envoy `cache_duration` **{x['cache_duration_s']} s** (the default) on both; {x['events']} events "
             f"of each kind per size, each timed on both Envoys at once; the pull Envoy is given at most {cap} s "
             "per event (waiting out its cache would take up to 300 s per event).", "",
             "| keys | event | push p50 / p99 / max (ms) | push within 200 ms / 1 s / its cap | "
             f"pull: caught within {cap:g} s | pull p50 of those (ms) |",
             "| ---: | --- | --- | --- | --- | ---: |"])
        for r in x["sizes"]:
            for kind, label in (("revoke", "revoke returned -> 401"), ("mint", "mint returned -> 200")):
                pu, pl = r[kind]["push"], r[kind]["pull"]
                out.append(f"| {r['keys']:,} | {label} | {ms(pu['p50_ms'])} / {ms(pu['p99_ms'])} / "
                           f"{ms(pu['max_ms'])} | {pu['within_200ms']} / {pu['within_1s']} / {pu['caught']} "
                           f"of {pu['n']} | "
                           f"{pl['caught']} of {pl['n']} | {ms(pl['p50_ms'])} |")
        add(["", f"Envoy latency (wrk at ~{x.get('load_rate', 0):,.0f} req/s offered, valid key, medians of "
                 f"{x['load_rounds']} alternating {x['load_seconds']} s "
                 f"runs): no pushes vs {x['stream_rate_per_s']:g} revocations/s pushed; the pull Envoy during "
                 "the same stream is the control (the server's work, no pushes).", "",
             "| keys | push Envoy, no pushes p50 / p99 (ms) | during pushes p50 / p99 (ms) | p99 ratio | "
             "pull Envoy, same stream p50 / p99 (ms) | non-2xx (valid key) | socket errors | "
             "connections closed by Envoy | pushes |",
             "| ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"])
        for r in x["sizes"]:
            la = r["latency"]
            bad = sum(la[k]["wrong_status"] for k in ("none", "pushes", "pull_stream"))
            sock = sum(la[k]["socket_errors"] for k in ("none", "pushes", "pull_stream"))
            out.append(f"| {r['keys']:,} | {la['none']['p50_ms']} / {la['none']['p99_ms']} | "
                       f"{la['pushes']['p50_ms']} / {la['pushes']['p99_ms']} | **{la['p99_ratio_pushes_to_none']}** | "
                       f"{la['pull_stream']['p50_ms']} / {la['pull_stream']['p99_ms']} | {bad} | {sock} | "
                       f"{la['envoy_closed_active_connections']} | {la['pushes_during']} |")
        add(["", "Cost of one push (revocations of old keys, which change only the gate), Envoy CPU from "
                 "/proc/PID/task/*/schedstat (and /proc/PID/stat, 10 ms ticks) minus its idle CPU over as long:", "",
             "| keys | shards | pushes | bytes per push | Envoy CPU per push (ms) | same from /proc/PID/stat (ms) | "
             "whole run: pushes, bytes per push, change -> ACK mean (ms) | server start (s) | authserver RSS |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"])
        for r in x["sizes"]:
            pp, sv = r["per_push"], r["server"]
            out.append(f"| {r['keys']:,} | {r['shards']} | {pp['applied']} | {_n(pp['bytes_per_push'])} B | "
                       f"{ms(pp['envoy_cpu_ms_per_push'])} | {ms(pp['envoy_cpu_ms_per_push_stat'])} | "
                       f"{int(sv['pushes'])}, {_n(sv['push_bytes'] / max(1, sv['pushes']))} B, "
                       f"{sv['change_to_ack_mean_ms']} | {r['server_start_s']} | "
                       f"{_mib(r['server_rss_end'])} |")
        add(["", "Push p50 / p99 / max are over the events that arrived within the push cap "
                 f"({x['push_cap_s']:g} s); those that did not are the difference to n.", "",
             f"_{x['note']}_", ""])

    section("push", _push)

    def _ratelimit(x: dict) -> None:
        la, rl, ac, ing, lu = x["latency"], x["rls"], x["accuracy"], x["usage"]["ingestion"], x["usage"]["last_used"]
        add(["## Rate limits and usage at the gateway", ""])
        pm = x.get("machine")
        if pm:  # merged into older results: say where this suite ran
            add([f"Measured {pm['date']} on {pm['cpu']}, {pm['cores']} cores, {pm['memory_gib']} GiB RAM, Linux "
                 f"{pm['kernel']}, Python {pm['python']}, Envoy {pm['envoy']}.", ""])
        add(["| measure | goal | result |", "| --- | --- | --- |",
             f"| p99 added by the ratelimit filter at ~{x['rate_offered']:,} req/s | <= 1 ms | "
             f"**{la['p99_added_ms']} ms** (off {la['off']['p50_ms']} / {la['off']['p99_ms']} ms, on "
             f"{la['on']['p50_ms']} / {la['on']['p99_ms']} ms p50 / p99; achieved {la['off']['rps']:,} / "
             f"{la['on']['rps']:,} req/s; errors {la['off']['errors']} / {la['on']['errors']}) |",
             f"| rate-limit decisions per server CPU second | >= 5,000 | **{_n(rl['decisions_per_server_cpu_s'])}** "
             f"({_n(rl['decisions_per_s'])}/s achieved with {rl['server_cpu_share']:.0%} of a core; "
             f"{rl['server_cpu_us_per_decision']} us CPU each; gRPC errors {rl['errors']}"
             + (f"; grpcio server in the same run {_n(g['decisions_per_server_cpu_s'])}, lean "
                f"{rl['vs_grpcio']}x" if (g := x.get("rls_grpcio")) and "vs_grpcio" in rl else "") + ") |",
             *([f"| the same, paced at {x['rate_offered']:,} calls/s (open loop) | >= 5,000 | "
                f"**{_n(rp['decisions_per_server_cpu_s'])}** ({rp['server_cpu_us_per_decision']} us CPU each; "
                f"call p50 / p99 {rp['p50_ms']} / {rp['p99_ms']} ms from the client, {rp['over_50ms']} over 50 ms; "
                f"gRPC errors {rp['errors']}"
                + (f"; grpcio server in the same run {_n(g['decisions_per_server_cpu_s'])}, lean "
                   f"{rp['vs_grpcio']}x" if (g := x.get("rls_grpcio_paced")) and "vs_grpcio" in rp else "")
                + ") |"] if (rp := x.get("rls_paced")) else []),
             f"| allowed per {ac['window_s']} s window, limit {x['limit']}, 2 replicas, 2 Envoys, "
             f"{_n(ac['offered_rps'])} req/s offered | within +-2% | **{ac['allowed_per_window']}** "
             f"(worst {ac['worst_error_pct']:+g}%; most in any {ac['window_s']} s span "
             f"{ac['max_in_any_window_span']}"
             + (f"; counted by the limiter {ac['counted_by_limiter_per_window']}, let through by Envoy past its "
                f"timeout {ac['failure_mode_allowed']}" if "counted_by_limiter_per_window" in ac else "")
             + ") |",
             f"| access-log entries per server CPU second | >= 20,000 | **{_n(ing['entries_per_server_cpu_s'])}** "
             f"({_n(ing['entries_per_s'])}/s achieved with {ing['server_cpu_share']:.0%} of a core) |",
             f"| call through Envoy -> last_used_at in GET /v1/keys/{{id}} (other replica) | <= 5 s | "
             f"**max {lu['max_s']} s**, p50 {lu['p50_s']} s over {lu['n']} calls (usage written every "
             f"{lu['flush_interval_s']:g} s) |",
             "", "Envoy's ratelimit filter counters (ok / over_limit / error / failure_mode_allowed): "
             + "; ".join(f"{k}: {v['ok']} / {v['over_limit']} / {v['error']} / {v['failure_mode_allowed']}"
                         for k, v in x["envoy_ratelimit"].items()) + ".",
             *(["", "The servers' GC passes during the runs (each stops the event loop; past 50 ms Envoy's calls "
                "fail open): " + "; ".join(f"{k}: {v['passes']:,.0f} passes, {v['full_passes']:,.0f} full, "
                                           f"{v['over_50ms']:,.0f} over 50 ms, {v['seconds']} s in all"
                                           for k, v in x["gc_pauses"].items()) + "."] if "gc_pauses" in x else []),
             "", f"_{x['note']}_", ""])

    section("ratelimit", _ratelimit)

    return "\n".join(out)


def plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append(name)

    s = results["suites"]
    tag = " (quick run)" if results["quick"] else ""

    def plot(name: str, draw) -> None:
        if name not in s:
            return
        try:
            draw(s[name])
        except (KeyError, TypeError, IndexError, ValueError) as exc:  # an older results.json (--merge)
            plt.close("all")
            print(f"[bench] no plot for {name}: {exc!r}", file=sys.stderr)

    def _gateway(d: dict) -> None:
        rows = d["rows"]
        fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4.2))
        for alg in sorted({r["alg"] for r in rows}):
            mine = [r for r in rows if r["alg"] == alg]
            xs = [r["keys"] for r in mine]
            line = a1.plot(xs, [r["envoy_rss"] / 1048576 for r in mine], marker="o", label=alg)[0]
            c = line.get_color()
            a2.plot(xs, [r["last"]["p50_ms"] for r in mine], marker="o", color=c, label=f"{alg} key last")
            a2.plot(xs, [r["first"]["p50_ms"] for r in mine], marker="x", color=c, linestyle="--",
                    label=f"{alg} key first")
            a3.plot(xs, [r["last"]["p99_ms"] for r in mine], marker="o", color=c, label=f"{alg} key last")
            a3.plot(xs, [r["first"]["p99_ms"] for r in mine], marker="x", color=c, linestyle="--",
                    label=f"{alg} key first")
        a1.set(xlabel="keys in the JWKS", ylabel="Envoy RSS (MiB)", title="Gateway memory" + tag)
        a2.set(xlabel="keys in the JWKS", ylabel="p50 latency (ms)", title="Gateway latency, p50")
        a3.set(xlabel="keys in the JWKS", ylabel="p99 latency (ms)", title="Gateway latency, p99")
        for a in (a1, a2, a3):
            a.legend(fontsize=7)
            a.grid(alpha=0.3)
        save(fig, "gateway.png")

    plot("gateway", _gateway)

    def _server_memory(d: dict) -> None:
        rows = d["rows"]
        fig, ax = plt.subplots(figsize=(6, 4))
        for alg in sorted({r["alg"] for r in rows}):
            mine = [r for r in rows if r["alg"] == alg]
            ax.plot([r["keys"] for r in mine], [r["server_rss"] / 1048576 for r in mine], marker="o", label=alg)
        ax.set(xlabel="live keys", ylabel="authserver RSS (MiB)", title="Server memory" + tag)
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, "server_memory.png")

    plot("server_memory", _server_memory)

    def _jwks_serving(j: dict) -> None:
        fig, ax = plt.subplots(figsize=(6, 4))
        labels, ours, base = [], [], []
        for row in j["sizes"]:
            labels.append(f"{row['keys']:,} {row.get('alg', j['alg'])}")
            ours.append(row["ours"]["rps"])
            base.append(row["baseline"]["rps"])
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], ours, width=0.4, label="authserver (median of the rounds)")
        ax.bar([x + 0.2 for x in xs], base, width=0.4, label=j.get("baseline", "nginx"))
        ax.set_xticks(list(xs), labels)
        ax.set(ylabel="requests/s", title="JWKS endpoint" + tag)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        save(fig, "jwks_serving.png")

    plot("jwks_serving", _jwks_serving)

    def _mint(mi: dict) -> None:
        lv = mi["levels"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
        a1.plot([x["clients"] for x in lv], [x["keys_per_s"] for x in lv], marker="o", label="mint keys/s")
        a1.axhline(mi["raw_keygen_per_s"]["2_threads"], color="gray", linestyle="--",
                   label="raw RSA-2048 generation, 2 threads")
        a1.axhline(mi["raw_keygen_per_s"]["1_thread"], color="gray", linestyle=":",
                   label="raw RSA-2048 generation, 1 thread")
        a1.set(xlabel="concurrent clients", ylabel="keys/s", title="Mint throughput (RS256)" + tag)
        a2.plot([x["clients"] for x in lv], [x["p50_ms"] for x in lv], marker="o", label="p50")
        a2.plot([x["clients"] for x in lv], [x["p99_ms"] for x in lv], marker="x", label="p99")
        a2.set(xlabel="concurrent clients", ylabel="latency (ms)", title="Mint latency (RS256)")
        for a in (a1, a2):
            a.legend(fontsize=8)
            a.grid(alpha=0.3)
        save(fig, "mint.png")

    plot("mint", _mint)

    def _propagation(p: dict) -> None:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, key in (("revocation", "revocation_s"), ("activation", "activation_s"),
                           ("instant activation", "instant_activation_s")):
            xs = sorted(p[key].get("samples", []))
            if xs:
                ax.step([0.0, *xs], [0.0, *((i + 1) / len(xs) for i in range(len(xs)))], where="post", label=label)
        ax.axvline(p["cache_duration_s"], color="gray", linestyle="--", label="cache_duration")
        ax.set(xlabel="seconds after the API call returned", ylabel="fraction of keys",
               title=f"Through Envoy (cache {p['cache_duration_s']} s)" + tag)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, "propagation.png")

    plot("propagation", _propagation)

    return made


def write(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results) + "\n")
    return [out / "results.json", out / "results.md", *(out / p for p in plots(results, out))]
