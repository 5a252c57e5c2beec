"""Envoy in front of an echo upstream, fetching JWKS documents we serve."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx

from authserver.gateways import envoy_config, routes_of
from authserver_devtools import EnvoyProcess, death_signal_preexec, free_port, stop_process, wait_until

ISSUER = "http://bench.invalid/t/bench"
AUDIENCE = "api://bench"
PREFIX = "sk_live_"


class Gateway:
    """Envoy as `authserver gateway envoy` configures it, answering 200 itself;
    JWKS from ``jwks_base`` (our server or a StaticServer). With ``server``,
    the config is the one `authserver gateway envoy` prints for that server's
    tenant (``xds``: with `--xds HOST:PORT`, taking pushes; ``extra``: more
    of its options, e.g. ``--ratelimit HOST:PORT``). With ``upstream``
    (HOST:PORT) requests that pass go there instead: a route that answers
    itself skips Envoy's ratelimit filter, which needs a route to a cluster."""

    def __init__(self, jwks_base: str = "", *, tenant_id: str = "bench", issuer: str = ISSUER,
                 audience: str = AUDIENCE, shard_count: int = 1, cache_duration: int = 600,
                 server: AuthServer | None = None, xds: str | None = None, extra: tuple[str, ...] = (),
                 upstream: str | None = None) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        listen, admin = f"127.0.0.1:{self.port}", f"127.0.0.1:{self.admin_port}"
        if server is not None:
            args = ["gateway", "envoy", "--tenant", tenant_id, "--upstream", upstream or "127.0.0.1:9",
                    "--listen", listen, "--admin", admin, "--format", "json"]
            config = json.loads(server.cli(*args, *(["--xds", xds] if xds else []), *extra))
        else:
            tenant = SimpleNamespace(id=tenant_id, issuer=issuer, audience=audience, key_prefix=PREFIX,
                                     shard_count=shard_count)
            settings = SimpleNamespace(gateway_cache_seconds=cache_duration, public_url=jwks_base,
                                       host="127.0.0.1", port=0)
            config = envoy_config(tenant, settings, upstream="127.0.0.1:9", listen=listen, admin=admin,
                                  cache_duration=cache_duration)
        # measure the gateway, not an upstream: Envoy answers 200 itself once
        # jwt_authn (and claim forwarding) passed the request
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        for route in routes_of(hcm["route_config"]["virtual_hosts"][0]) if upstream is None else ():
            del route["route"]  # shard routes keep their match
            route["direct_response"] = {"status": 200, "body": {"inline_string": "ok"}}
        self.envoy = EnvoyProcess(config)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bench"

    def start(self, probe_key: str, timeout: float = 300) -> Gateway:
        self.envoy.start()
        wait_until(lambda: self.status(probe_key) == 200, timeout, interval=0.2,
                   what=f"envoy accepts the probe key (log {self.envoy.log_path})", alive=self.envoy.alive)
        return self

    def status(self, key: str) -> int:
        return httpx.get(self.url, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code

    def counter(self, suffix: str) -> int:
        """Sum of the admin counters whose name ends with ``suffix``
        (e.g. ``jwt_authn.jwks_fetch_success``)."""
        # the admin filter is a regex over stat names: escape the dots, anchor at the end
        text = httpx.get(f"http://127.0.0.1:{self.admin_port}/stats",
                         params={"filter": suffix.replace(".", "\\.") + "$"}, timeout=30).text
        return sum(int(v) for k, _, v in (line.partition(": ") for line in text.splitlines())
                   if k.endswith(suffix) and v.isdigit())

    def counters(self, pattern: str) -> int:
        """Sum of the admin counters whose name matches the regex ``pattern``."""
        import re

        text = httpx.get(f"http://127.0.0.1:{self.admin_port}/stats", params={"filter": pattern}, timeout=30).text
        return sum(int(v) for k, _, v in (line.partition(": ") for line in text.splitlines())
                   if re.search(pattern, k) and v.isdigit())

    def stop(self) -> None:
        self.envoy.stop()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.stop()
        _cleanup(self.envoy.workdir, failed=exc_type is not None, what="envoy")


def _cleanup(path: Path, *, failed: bool, what: str) -> None:
    """Remove a work directory (databases of 100k keys add up); keep it, and
    say where, when the measurement failed, for its log."""
    if failed:
        print(f"[bench] {what} files kept in {path}", file=sys.stderr)
    else:
        shutil.rmtree(path, ignore_errors=True)


def tenant_docs(tenant_id: str, shards: dict[int | None, bytes]) -> dict[str, bytes]:
    out = {}
    for shard, body in shards.items():
        path = (f"/t/{tenant_id}/.well-known/jwks.json" if shard is None
                else f"/t/{tenant_id}/shards/{shard}/jwks.json")
        out[path] = body
    return out


class AuthServer:
    """`authserver serve` on a temp database, for the server-side benchmarks."""

    def __init__(self, env: dict[str, str] | None = None, db_url: str | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-authserver-"))
        self.port = free_port()
        self.env = {**os.environ, "AUTHSERVER_DATABASE_URL": db_url or f"sqlite:///{self.dir / 'bench.db'}",
                    "AUTHSERVER_HOST": "127.0.0.1", "AUTHSERVER_PORT": str(self.port),
                    "AUTHSERVER_PUBLIC_URL": f"http://127.0.0.1:{self.port}", "AUTHSERVER_LOG_LEVEL": "WARNING",
                    "AUTHSERVER_RATE_LIMIT_ADMIN_PER_MINUTE": "0",
                    # /metrics is not public: the harness scrapes it with a token of its own
                    "AUTHSERVER_METRICS_TOKEN": secrets.token_urlsafe(24), **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.admin_key = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "authserver", *args], env=self.env, capture_output=True,
                             text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return out.stdout

    def create_tenant(self, tenant_id: str = "default", algorithm: str = "RS256") -> str:
        self.admin_key = json.loads(self.cli("tenant", "create", tenant_id, "--json", "--algorithm", algorithm))[
            "admin_key"]
        return self.admin_key

    def start(self, timeout: float = 300, args: tuple[str, ...] = ()) -> AuthServer:
        """``args``: more `serve` options, e.g. ("--workers", "2")."""
        return self.launch(args).ready(timeout)

    def launch(self, args: tuple[str, ...] = ()) -> AuthServer:
        """Start the process without waiting for it (``ready`` waits). From the
        main thread: children get SIGTERM when the thread that started them ends."""
        log = open(self.dir / "server.log", "ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "authserver", "serve", *args], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         preexec_fn=death_signal_preexec())
        finally:
            log.close()
        return self

    def ready(self, timeout: float = 300) -> AuthServer:
        assert self.proc is not None, "launch() first"
        wait_until(lambda: httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200, timeout,
                   interval=0.1, what=f"authserver ready (log {self.dir / 'server.log'})",
                   alive=lambda: self.proc.poll() is None)
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def metric(self, name: str) -> float:
        """Sum of the samples of one metric in /metrics (every label set)."""
        text = httpx.get(f"{self.url}/metrics", timeout=30,
                         headers={"Authorization": f"Bearer {self.env['AUTHSERVER_METRICS_TOKEN']}"}).text
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                   if not line.startswith("#") and line.partition(" ")[0].partition("{")[0] == name)

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> AuthServer:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.stop()
        _cleanup(self.dir, failed=exc_type is not None, what="authserver")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}


def now() -> float:
    return time.perf_counter()
