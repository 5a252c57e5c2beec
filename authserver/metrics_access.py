"""Who may read /metrics, and its own listener.

The metrics name every tenant and its activity, so they are not public: on
the public listener /metrics answers 404 unless ``AUTHSERVER_METRICS_TOKEN``
is set and presented as a bearer token; ``AUTHSERVER_METRICS_PORT`` serves
them on a separate listener (loopback by default) for a local scraper.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable

__all__ = ["MetricsListener", "token_ok"]

log = logging.getLogger("authserver.metrics")

_HEAD_LIMIT = 8192
_HEAD_TIMEOUT = 5.0
_MAX_CLIENTS = 32  # a scraper needs one; past this the oldest waiting client is dropped


def token_ok(expected: str | None, authorization: str | None) -> bool:
    """Whether ``Authorization: Bearer <expected>`` was presented (constant time)."""
    if not expected or not authorization:
        return False
    scheme, _, presented = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # digests: equal lengths, so the comparison does not even leak the token's length
    return hmac.compare_digest(hashlib.sha256(presented.strip().encode()).digest(),
                               hashlib.sha256(expected.encode()).digest())


class MetricsListener:
    """A minimal HTTP/1.x listener that answers ``GET /metrics`` and closes."""

    def __init__(self, render: Callable[[], bytes], host: str, port: int, token: str | None) -> None:
        self.render, self.host, self.port, self.token = render, host, port, token
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[None], None] = {}  # waiting clients, oldest first

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=_HEAD_LIMIT)
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = None
        if len(self._clients) > _MAX_CLIENTS:  # the oldest waiting client gives way to the newest
            next(iter(self._clients)).cancel()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT)
            writer.write(self._answer(head))
            await asyncio.wait_for(writer.drain(), _HEAD_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError, ValueError, OSError, asyncio.IncompleteReadError):
            pass  # gave way, too slow, too long or gone: nothing to answer
        finally:
            self._clients.pop(task, None)
            writer.close()

    def _answer(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        authorization = next((line.partition(":")[2] for line in lines[1:]
                              if line.partition(":")[0].strip().lower() == "authorization"), None)
        if path != "/metrics":
            return _response(404, "Not Found", b"not found\n")
        if method not in ("GET", "HEAD"):
            return _response(405, "Method Not Allowed", b"method not allowed\n", {"Allow": "GET, HEAD"})
        if self.token and not token_ok(self.token, authorization):
            return _response(401, "Unauthorized", b"bearer token required\n",
                             {"WWW-Authenticate": 'Bearer realm="metrics"'})
        body = self.render()
        return _response(200, "OK", b"" if method == "HEAD" else body,
                         {"Content-Type": "text/plain; version=0.0.4"}, length=len(body))


def _response(status: int, reason: str, body: bytes, headers: dict[str, str] | None = None,
              length: int | None = None) -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body) if length is None else length}",
            "Connection: close", "Cache-Control: no-store"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
