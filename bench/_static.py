"""A minimal static server for JWKS documents (HTTP/1.1, keep-alive, loopback).

In-process (``StaticServer`` in ``_common``) it serves synthetic JWKS to Envoy;
as a process it is the stand-in for nginx when nginx is not installed:

    python -m bench._static --port 8081 /jwks.json=/tmp/x/jwks.json
"""

from __future__ import annotations

import argparse
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def handler_for(documents: dict[str, bytes]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall
        server_version = "bench-static"

        def do_GET(self):  # noqa: N802
            body = documents.get(self.path.split("?")[0])
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # load tools hang up mid-body at the end
                pass

        def log_message(self, *args):
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench._static")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("documents", nargs="+", help="URL_PATH=FILE (read once at start)")
    args = p.parse_args(argv)
    docs = {}
    for spec in args.documents:
        path, _, file = spec.partition("=")
        docs[path] = Path(file).read_bytes()
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(docs))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
