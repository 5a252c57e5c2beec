"""Shared pieces: machine facts, process memory, percentiles, load generation."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

from authserver_devtools import death_signal_preexec, find_envoy

try:
    from tqdm import tqdm
except ImportError:  # progress bars are a nicety
    tqdm = None


def tool(name: str) -> str | None:
    """An external tool (wrk, nginx), or None. ``BENCH_WRK`` / ``BENCH_NGINX``
    override the lookup: a path, or ``none`` to force the pure-Python fallback."""
    override = os.environ.get(f"BENCH_{name.upper()}")
    if override is not None:
        return None if override.lower() in ("", "0", "none", "no", "off") else override
    return shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)


def progress(iterable, desc: str, total: int | None = None):
    if tqdm is None:
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
    except (OSError, AttributeError):
        pass
    envoy = find_envoy()
    envoy_version = ""
    if envoy:
        out = subprocess.run([envoy, "--version"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"/(\d+\.\d+\.\d+)/", out)
        envoy_version = m.group(1) if m else out.strip()[:80]
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "envoy": envoy_version,
        "wrk": bool(tool("wrk")),
        "nginx": bool(tool("nginx")),
        # what the HTTP load runs and the JWKS baseline actually used
        "load_generator": "wrk" if tool("wrk") else "python-asyncio",
        "static_baseline": "nginx" if tool("nginx") else "python-http.server",
    }


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process used so far (/proc/PID/stat utime + stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after "(comm)": field 3 (state) is index 0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_run_seconds(pid: int) -> float:
    """The same in nanoseconds' resolution (stat counts 10 ms ticks): time on
    CPU of every thread of the process, from /proc/PID/task/*/schedstat."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            pass
    return total / 1e9


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys on xs."""
    if len(xs) < 2:
        return float("nan")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else float("nan")


@dataclass
class Load:
    """One load run: latency percentiles in ms, requests/s, the tool used, and
    whether every answer had the expected status (a fast 401 is no latency figure)."""

    p50_ms: float
    p99_ms: float
    rps: float
    tool: str
    ok: bool
    requests: int = 0
    errors: int = 0  # unexpected statuses, socket errors, timeouts
    wrong_status: int = 0  # of errors: answers with another status than expected
    socket_errors: int = 0  # of errors: connect/read/write errors (a reset connection) and timeouts

    def as_dict(self) -> dict:
        return {"p50_ms": round(self.p50_ms, 3), "p99_ms": round(self.p99_ms, 3), "rps": round(self.rps, 1),
                "tool": self.tool, "ok": self.ok, "requests": self.requests, "errors": self.errors,
                "wrong_status": self.wrong_status, "socket_errors": self.socket_errors}


def _wrk_ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60_000}[unit]


def parse_wrk(out: str, expect: int = 200) -> Load:
    """Parse `wrk --latency` output (wrk counts a status >= 400 as non-2xx/3xx)."""
    dist = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"^\s*(\d+) requests in", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    requests = int(total.group(1)) if total else 0
    bad_status = int(non2xx.group(1)) if non2xx else 0
    if expect >= 400:  # every answer should be non-2xx
        bad_status = requests - bad_status
    socket_errors = sum(int(x) for x in sock.groups()) if sock else 0
    errors = bad_status + socket_errors
    return Load(_wrk_ms(dist.get("50", "nan")), _wrk_ms(dist.get("99", "nan")),
                float(rps.group(1)) if rps else float("nan"), "wrk", requests > 0 and errors == 0, requests, errors,
                bad_status, socket_errors)


def load(url: str, headers: dict[str, str] | None = None, *, seconds: float = 3.0, connections: int = 4,
         expect: int = 200, rate: float | None = None) -> Load:
    """HTTP/1.1 keep-alive load on loopback, one load thread: `wrk --latency`
    when installed, else an asyncio generator (slower: it caps req/s lower).

    Without ``rate`` the connections send back to back (the server saturated:
    req/s is the figure). With ``rate`` each connection waits a random time,
    exponential with mean connections/rate seconds, between requests (wrk's
    ``delay()`` hook), so the offered load stays about ``rate`` and the latency
    is that of an unsaturated server, less sensitive to whatever else the
    machine runs. Random, not fixed: with a fixed wait, answers that leave
    together (a batch) bring the connections' next requests back together, and
    the load turns into bursts whose queueing the latency then measures."""
    if not url.startswith("http://127.0.0.1"):
        raise ValueError("load only targets loopback")
    wrk = tool("wrk")
    # check the answer first: a fast 401 is not a latency figure
    import httpx

    status = httpx.get(url, headers=headers, timeout=10).status_code
    if wrk:
        cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        with tempfile.TemporaryDirectory() as tmp:
            if rate:
                script = Path(tmp, "rate.lua")
                mean = connections * 1000 / rate
                script.write_text("math.randomseed(7)\n"
                                  f"function delay() return math.floor(-{mean} * math.log(1 - math.random())) end\n")
                cmd += ["-s", str(script)]
            out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 60,
                                 preexec_fn=death_signal_preexec()).stdout
        result = parse_wrk(out, expect)
    else:
        result = _asyncio_load(url, headers or {}, seconds, connections, expect, rate)
    result.ok = result.ok and status == expect
    return result


def _asyncio_load(url: str, headers: dict[str, str], seconds: float, connections: int, expect: int,
                  rate: float | None = None) -> Load:
    host_port, _, path = url[len("http://"):].partition("/")
    host, _, port = host_port.partition(":")
    request = (f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    latencies: list[float] = []
    errors = sock_errors = 0

    async def conn(deadline: float) -> None:
        nonlocal errors, sock_errors
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                writer.write(request)
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                except (TimeoutError, OSError, asyncio.IncompleteReadError):
                    sock_errors += 1
                    return
                m = re.search(rb"content-length:\s*(\d+)", head, re.I)
                if m:
                    await reader.readexactly(int(m.group(1)))
                elif re.search(rb"transfer-encoding:\s*chunked", head, re.I):
                    raise RuntimeError("the asyncio load generator does not read chunked bodies")
                latencies.append((time.perf_counter() - t0) * 1000)
                if int(head.split(b" ", 2)[1]) != expect:
                    errors += 1
                if rate:
                    await asyncio.sleep(connections / rate)
        finally:
            writer.close()

    async def main() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(conn(start + seconds) for _ in range(connections)))
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    return Load(pct(latencies, 50), pct(latencies, 99), len(latencies) / elapsed, "python-asyncio",
                bool(latencies) and errors + sock_errors == 0, len(latencies), errors + sock_errors, errors,
                sock_errors)


class StaticServer:
    """Serves in-memory documents by path on loopback, from a thread of this
    process (synthetic JWKS for Envoy, fetched once per cache period)."""

    def __init__(self, documents: dict[str, bytes]) -> None:
        from ._static import handler_for

        self.documents = documents
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(documents))
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StaticServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
