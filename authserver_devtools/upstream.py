"""An HTTP upstream that echoes what the gateway forwarded, as JSON
(alone: ``python -m authserver_devtools.echo``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["EchoUpstream"]


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    hits = 0  # requests answered


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server_version = "authserver-echo"
    server: _EchoServer

    def _answer(self) -> None:
        self.server.hits += 1
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
        self._server = _EchoServer((host, port), _EchoHandler)
        address = self._server.server_address
        self.host, self.port = str(address[0]), int(address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="echo-upstream", daemon=True)

    @property
    def hits(self) -> int:
        """Requests answered so far."""
        return self._server.hits

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EchoUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
