"""A local webhook receiver for the tests: a real HTTP server on loopback
that records each request and answers the status codes it is told to."""

from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    # the answers to give, in order; then ``default``
    statuses: list[int] = field(default_factory=list)
    default: int = 204
    delay: float = 0.0  # seconds to wait before answering (a slow receiver)
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body, time.time()))
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else receiver.default
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            # the stdlib's backlog of 5 overflows when several senders connect at
            # once; the refused attempt is then (rightly) retried only after backoff
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verified(secret: str, request: Received) -> dict:
    """The payload, checked with the independent Standard Webhooks implementation."""
    from standardwebhooks.webhooks import Webhook

    return Webhook(secret).verify(request.body, request.headers)


def signed_by(secret: str, request: Received) -> bool:
    """The signature, checked with `standardwebhooks`' own signing, whatever the
    timestamp (for tests that move the clock past its 5-minute tolerance)."""
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    at = datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), tz=UTC)
    expected = Webhook(secret).sign(request.headers["webhook-id"], at, request.body.decode())
    return expected in request.headers["webhook-signature"].split(" ")
