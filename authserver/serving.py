"""``authserver serve``: uvicorn, plus the limits it lacks against slow clients.

uvicorn (httptools) times out only idle keep-alive connections after a response: a
client that sends a partial request head, one header line every few seconds,
holds its connection (and a descriptor) for ever, and enough of them exhaust
the process's descriptors (EMFILE at accept) so that no gateway can fetch the
JWKS. Its ``limit_concurrency`` answers 503 only once a request is complete,
which a slow client never sends. So each connection here carries a deadline:

- its request head (request line and headers) must arrive within
  ``header_timeout_seconds`` of the connection opening or of the previous
  response (a total, not an idle timeout: trickling bytes does not extend it);
- its body within ``body_timeout_seconds`` of the head;
- a JWKS body sent from its memfd (``FastJWKS``) must be taken within
  ``header_timeout_seconds`` (``write_timeout``), as its next request head would;
- at most ``max_connections`` are open (default: the descriptor limit minus
  headroom for the database, Redis and files); a new connection past the cap
  closes the oldest one still waiting for its request head, so a flood of slow
  clients cannot keep a gateway out while they wait for their deadline.

If the descriptors run out anyway (a cap set above the limit, other files),
asyncio's accept loop logs the EMFILE and retries a second later; uvloop's
(libuv) closes at once, unlogged, the connections it cannot take (it keeps a
spare descriptor for that): no crash and no busy loop on either (tests/serving).
libuv accepts every pending connection in one go, where asyncio takes the
accept burst per loop turn, so the cap's headroom is asyncio's measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import resource
import secrets
import socket
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .api.public import accepts_gzip, build_answer, etag_matches, jwks_max_age, match_jwks, response_head
from .gcpause import GcPauses, freeze_startup
from .metrics import Latencies
from .settings import Settings

if TYPE_CHECKING:
    import uvicorn

    from .core import Core
    from .keycache import ServedJWKS, TenantKeys

__all__ = ["ConnectionGuard", "accept_burst", "build_server", "connection_cap", "event_loop", "serve"]

log = logging.getLogger("authserver.serving")

_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_LISTEN_QUEUE = 2048  # uvicorn's default backlog (the kernel caps it at net.core.somaxconn)
_LOG_EVERY = 10.0  # seconds between two summaries of closed slow connections
_READ_BUFFER = 64 * 1024  # what one recv may read (asyncio's own: 256 KiB, allocated per recv)
_JOIN_MAX = 128 * 1024  # bodies up to this size are cached joined to their head: one write
_JOINED_BUDGET = 32 << 20  # bytes of such answers kept, all routes together
_SENDFILE_MIN = _JOIN_MAX  # bigger bodies are sent from a memfd (RS256: from ~300 keys)
_SENDFILE_BUDGET = 128 << 20  # bytes of bodies kept in memfds (the least recently used go first)
_SENDFILE = hasattr(os, "memfd_create") and hasattr(os, "sendfile")
_CORK: int = getattr(socket, "TCP_CORK", 0)  # Linux; 0: not corked


def accept_burst(nofile: int) -> int:
    """The listen backlog, which asyncio also uses as the number of connections
    it accepts in one go, before any of them reaches the guard."""
    return min(2048, max(16, nofile // 32))


def connection_cap(settings: Settings, nofile: int) -> int:
    """``max_connections``, or the descriptor limit minus headroom: 10% (at
    least 64) for the database, Redis and files, plus the sockets asyncio may
    accept in the three loop turns before an evicted one is closed."""
    if settings.max_connections:
        return settings.max_connections
    return max(16, nofile - max(64, nofile // 10) - 3 * accept_burst(nofile))


def _nofile() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY or soft <= 0 else soft


class ConnectionGuard:
    """The open connections of one server and their deadlines."""

    def __init__(self, cap: int, header_timeout: float, body_timeout: float) -> None:
        self.cap, self.header_timeout, self.body_timeout = cap, header_timeout, body_timeout
        self.open: set[GuardedProtocol] = set()
        # connections waiting for a request head, oldest first (a dict keeps insertion order)
        self.waiting: dict[GuardedProtocol, None] = {}
        self.closed = {"header_timeout": 0, "body_timeout": 0, "write_timeout": 0, "evicted": 0}
        # every connection reads into this one buffer and copies out what arrived
        self.read_buffer = memoryview(bytearray(_READ_BUFFER))
        self._reported = dict(self.closed)
        self._last_log = 0.0

    def opened(self, conn: GuardedProtocol) -> None:
        self.open.add(conn)
        if len(self.open) > self.cap:
            victim = next(iter(self.waiting), conn)  # the oldest slow one, or else the newcomer
            victim.expire("evicted")

    def forget(self, conn: GuardedProtocol) -> None:
        self.open.discard(conn)
        self.waiting.pop(conn, None)

    def count(self, reason: str) -> None:
        self.closed[reason] += 1
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY:
            delta = {k: v - self._reported[k] for k, v in self.closed.items() if v != self._reported[k]}
            log.warning("closed slow or surplus client connections: %s (open: %d, cap: %d)",
                        delta, len(self.open), self.cap)
            self._reported, self._last_log = dict(self.closed), now


class _BodyFile:
    """A rendered body in a memfd, for os.sendfile: the kernel sends it from its
    own pages, with no copy into Python's write buffer (nginx's sendfile)."""

    __slots__ = ("fd", "size", "users", "dropped")

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size, self.users, self.dropped = fd, size, 0, False

    def fileno(self) -> int:
        return self.fd

    def release(self) -> None:
        self.users -= 1
        self._close_if_unused()

    def drop(self) -> None:
        self.dropped = True
        self._close_if_unused()

    def _close_if_unused(self) -> None:
        if self.dropped and self.users <= 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class BodyFiles:
    """memfd copies of the big bodies (by ETag and encoding: the ETag is a digest
    of the content), made in a thread on first use, the least recently used
    dropped past ``budget`` bytes; a body not (yet) in a file is written from
    its chunks."""

    def __init__(self, budget: int = _SENDFILE_BUDGET) -> None:
        self.budget = budget
        self.files: dict[tuple[str, bool], _BodyFile | None] = {}  # None: being made
        self.total = 0

    def get(self, key: tuple[str, bool], chunks: list[bytes], size: int) -> _BodyFile | None:
        if key not in self.files:
            if size <= self.budget:
                self.files[key] = None
                loop = asyncio.get_running_loop()
                loop.run_in_executor(None, self._make, loop, key, chunks, size)
            return None
        found = self.files[key]
        if found is not None:
            self.files[key] = self.files.pop(key)  # most recently used last
        return found

    def _make(self, loop: asyncio.AbstractEventLoop, key: tuple[str, bool], chunks: list[bytes], size: int) -> None:
        """In a thread (os.write lets go of the GIL); the result is installed by the loop."""
        fd = -1
        try:
            fd = os.memfd_create("jwks", os.MFD_CLOEXEC)
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        except OSError:
            if fd >= 0:
                os.close(fd)
            log.warning("could not copy a JWKS body into a memfd", exc_info=True)
            fd = -1
        loop.call_soon_threadsafe(self._install, key, fd, size)

    def _install(self, key: tuple[str, bool], fd: int, size: int) -> None:
        if fd < 0 or key not in self.files:
            self.files.pop(key, None)
            if fd >= 0:
                os.close(fd)
            return
        self.files[key] = _BodyFile(fd, size)
        self.total += size
        while self.total > self.budget:
            oldest = next(k for k, f in self.files.items() if f is not None)
            dropped = self.files.pop(oldest)
            assert dropped is not None
            self.total -= dropped.size
            dropped.drop()


class _Sending:
    """A head and a body from a memfd that the socket did not take at once:
    what is left of them, and the descriptor whose writability the loop watches."""

    __slots__ = ("reply", "head", "offset", "fd")

    def __init__(self, reply: Reply) -> None:
        self.reply, self.head, self.offset, self.fd = reply, reply.data, 0, -1


class Reply:
    """What FastJWKS answers: the bytes to write at once, or a head and a body."""

    __slots__ = ("data", "body", "file", "keep_alive")

    def __init__(self, data: bytes, body: list[bytes], file: _BodyFile | None, keep_alive: bool) -> None:
        self.data, self.body, self.file, self.keep_alive = data, body, file, keep_alive


class _Prepared:
    """One answer of a route, written as is by every request that gets it: its
    reply (head, or head and small body joined: one write), the memfd key of a
    big body, and where it is counted."""

    __slots__ = ("reply", "file_key", "size", "tally", "latencies")

    def __init__(self, reply: Reply, file_key: tuple[str, bool] | None, size: int, tally: list[int],
                 latencies: Latencies) -> None:
        self.reply, self.file_key, self.size, self.tally, self.latencies = reply, file_key, size, tally, latencies


class _Route:
    """A JWKS path of a known tenant, and its answers prepared for the rendering
    (and the Date header) they were made with."""

    __slots__ = ("tk", "tenant_id", "shard", "template", "served", "etag", "date", "answers", "joined")

    def __init__(self, tk: TenantKeys, tenant_id: str, shard: int | None, template: str) -> None:
        self.tk, self.tenant_id, self.shard, self.template = tk, tenant_id, shard, template
        self.served: object = None
        self.etag = b""
        self.date: object = None
        # (not modified, gzip, HEAD, keep-alive, max-age) -> the answer
        self.answers: dict[tuple[bool, bool, bool, bool, int], _Prepared] = {}
        self.joined = 0  # bytes of the answers that hold a body


class FastJWKS:
    """The JWKS GETs answered in the protocol, as soon as their head is parsed:
    no ASGI cycle, task, scope or message is made for them (the same answer as
    the app's, api.public.build_answer, counted in the same metrics).

    Per request it costs a few dictionary lookups: each route keeps its answers
    (status line, headers and, for a small body, the body: one write) for the
    rendering its tenant serves now, asked for on every request (TenantKeys.jwks,
    which also removes the keys whose time has come): a change is served from
    the first request after it, with no copy of the old answers left to serve.
    They are made again when the rendering changes, when uvicorn renews its Date
    header (once a second) and when max-age changes (near a scheduled removal).
    A big body is sent from a memfd (``BodyFiles``)."""

    def __init__(self, core: Core, files: BodyFiles | None = None) -> None:
        self.core = core
        self.files = files if files is not None else BodyFiles()
        self._routes: dict[bytes, _Route] = {}  # by raw request target (queries: any number of them)
        self._targets: dict[tuple[str, int | None, str], _Route] = {}  # by (tenant, shard, template)
        self._joined = 0  # bytes of all the answers that hold a body (_JOINED_BUDGET)
        self._gzip: dict[bytes, bool] = {}  # Accept-Encoding value -> gzip accepted

    def respond(self, head_only: bool, url: bytes, headers: list[tuple[bytes, bytes]],
                default_headers: list[tuple[bytes, bytes]], keep_alive: bool) -> Reply | None:
        """The answer to write, or None: not ours (the app answers it)."""
        started = time.perf_counter()
        route = self._routes.get(url)
        if route is None or self.core.cache.tenants.get(route.tenant_id) is not route.tk:
            route = self._route(url)
            if route is None:
                return None
        if_none_match = accept_encoding = None
        for name, value in headers:
            if name == b"if-none-match":
                if_none_match = value
            elif name == b"accept-encoding":
                accept_encoding = value
            elif name == b"content-length" or name == b"transfer-encoding":
                return None  # a GET with a body: the app reads and judges it
        tk = route.tk
        served = tk.jwks(route.shard)
        if served is not route.served or default_headers is not route.date:
            route.served, route.etag, route.date = served, served.etag.encode("latin-1"), default_headers
            self._forget(route)
        not_modified = if_none_match is not None and (
            if_none_match == route.etag or etag_matches(if_none_match.decode("latin-1"), served.etag))
        gzipped = not not_modified and accept_encoding is not None and self._accepts_gzip(accept_encoding)
        key = (not_modified, gzipped, head_only, keep_alive, jwks_max_age(self.core, tk))
        prepared = route.answers.get(key)
        if prepared is None:
            prepared = self._prepare(route, served, key, default_headers)
        prepared.tally[0] += 1
        reply = prepared.reply
        if prepared.file_key is not None:
            reply = Reply(reply.data, reply.body, self.files.get(prepared.file_key, reply.body, prepared.size),
                          keep_alive)
        seconds = time.perf_counter() - started
        latencies = prepared.latencies
        counts = latencies.counts
        counts[bisect_left(latencies.bounds, seconds)] += 1
        counts[-1] += seconds
        return reply

    def _route(self, url: bytes) -> _Route | None:
        path, _, _ = url.partition(b"?")
        if b"%" in path or not path.isascii():
            return None  # let uvicorn decode it for the app
        matched = match_jwks(path.decode("ascii"), self.core.settings.default_tenant)
        if matched is None:
            return None
        tenant_id, shard, template = matched
        tk = self.core.cache.tenants.get(tenant_id)
        if tk is None or not tk.has_shard(shard):  # shards only ever grow: a route stays valid
            return None
        route = self._targets.get(matched)
        if route is None or route.tk is not tk:
            if route is not None:
                self._forget(route)
            route = self._targets[matched] = _Route(tk, tenant_id, shard, template)
        if len(self._routes) >= 256:
            self._routes.clear()
        self._routes[url] = route
        return route

    def _forget(self, route: _Route) -> None:
        route.answers.clear()
        self._joined -= route.joined
        route.joined = 0

    def _accepts_gzip(self, header: bytes) -> bool:
        found = self._gzip.get(header)
        if found is None:
            if len(self._gzip) >= 64:
                self._gzip.clear()
            found = self._gzip[header] = accepts_gzip(header.decode("latin-1"))
        return found

    def _prepare(self, route: _Route, served: ServedJWKS, key: tuple[bool, bool, bool, bool, int],
                 default_headers: list[tuple[bytes, bytes]]) -> _Prepared:
        if len(route.answers) >= 64:
            self._forget(route)
        not_modified, gzipped, head_only, keep_alive, max_age = key
        answer = build_answer(served, max_age, not_modified, gzipped)
        head = [STATUS_LINE[answer.status]]
        for name, value in [*default_headers, *response_head(answer)]:
            head += [name, b": ", value, b"\r\n"]
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        data, body, file_key = b"".join(head), [], None
        chunks = answer.chunks
        size = sum(map(len, chunks))
        if chunks and not head_only:
            if size <= _JOIN_MAX:
                data = b"".join([data, *chunks])
                if self._joined + len(data) > _JOINED_BUDGET:  # many tenants: start again
                    for other in self._targets.values():
                        self._forget(other)
                route.joined += len(data)
                self._joined += len(data)
            else:
                body = chunks
                if size >= _SENDFILE_MIN and _SENDFILE:
                    file_key = (served.etag, gzipped)
        m = self.core.metrics
        method = "HEAD" if head_only else "GET"
        tally = m.tally(m.http_requests.labels(route.template, method, str(answer.status)),
                        m.jwks_fetch_child(route.tenant_id, route.shard, not_modified))
        prepared = _Prepared(Reply(data, body, None, keep_alive), file_key, size, tally,
                             m.latencies(m.http_seconds.labels(route.template, method)))
        route.answers[key] = prepared
        return prepared


class GuardedProtocol(HttpToolsProtocol, asyncio.BufferedProtocol):
    """uvicorn's httptools protocol with a deadline on each request's head and
    body (httptools: ~2x fewer CPU microseconds per request than h11 here),
    and the JWKS GETs answered in the protocol (``FastJWKS``).

    A buffered protocol to asyncio: it reads into the guard's buffer, where
    asyncio's plain protocols cost an mmap, mremap and munmap of 256 KiB per read."""

    guard: ClassVar[ConnectionGuard]
    fast: ClassVar[FastJWKS | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._got_bytes = False
        self._head_due = 0.0  # when the next request head is due (the header deadline runs to it)
        self._reading: str | None = None  # what the parser is in: "head", "body", None between requests
        self._answered = False  # the request being parsed was answered by FastJWKS
        self._tracked = False  # the last thing parsed was a fast answer, its deadlines set
        self._sending: _Sending | None = None  # a body being sent from a memfd, not all taken at once
        # the keep-alive timer after fast answers: one per connection, moved lazily (uvicorn
        # arms and cancels one per request); _idle_due None: a request since the last answer
        self._idle_due: float | None = None
        self._lazy_keep_alive = False  # timeout_keep_alive_task is that timer

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.guard.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.guard.read_buffer[:nbytes].tobytes())

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.guard.opened(self)
        self._track()

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        self._tracked = False
        super().data_received(data)
        if self.parser is not None and not self._tracked:  # not closed meanwhile (a 400)
            self._track()

    def on_message_begin(self) -> None:
        # what uvicorn's on_message_begin sets, but its ASGI scope only once the request
        # is known not to be a fast one (_make_scope): a dict and a copy less per JWKS GET
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._reading = "head"
        self._tracked = False

    def _make_scope(self) -> None:
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        self._reading = "body"
        # not while the client is behind on reading (write buffer over its high-water mark):
        # pipelined requests then take the app's path, which queues them and waits for it
        if (self.fast is not None and not self._answering() and not self.flow.write_paused
                and self._answer_fast()):
            return
        self._make_scope()
        super().on_headers_complete()

    def _answer_fast(self) -> bool:
        parser = self.parser
        method = parser.get_method()
        if (method != b"GET" and method != b"HEAD") or parser.should_upgrade():
            return False
        keep_alive = parser.get_http_version() == "1.1" and parser.should_keep_alive()
        assert self.fast is not None
        reply = self.fast.respond(method == b"HEAD", self.url, self.headers, self.server_state.default_headers,
                                  keep_alive)
        if reply is None:
            return False
        self._answered = True
        if reply.file is not None:
            self._send_file(reply)
            return True
        if reply.body:
            self.transport.writelines([reply.data, *reply.body])
        else:
            self.transport.write(reply.data)
        if not keep_alive:
            self.transport.close()
        return True

    def _cork(self, on: bool) -> None:
        """TCP_CORK around a head and its body from a memfd (nginx's tcp_nopush):
        the head then leaves in the body's first full segment, not alone (TCP_NODELAY),
        and sendfile's pieces in full segments. Uncorked, a 452 KB body left in
        ~35 KB segments on loopback, each one more to process for both ends: with
        two workers sending at once, the client's CPU per response rose ~40% and
        two workers served half of what one did (bench jwks_serving)."""
        if _CORK and not self.transport.is_closing():
            with contextlib.suppress(OSError):  # the client reset meanwhile: the next write says so
                self.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, _CORK, on)

    def _send_file(self, reply: Reply) -> None:
        """A head and its body from a memfd, written to the socket by the protocol
        itself (os.write, os.sendfile) as far as the socket takes them: a body of a
        few hundred KB usually goes whole, with no loop registration. The rest
        follows each time the socket is writable again, reading paused meanwhile
        (each connection sends what its socket takes, in turn); then the next
        request. The same on asyncio and uvloop, which has no loop.sendfile for
        its transports: only the loop's public add_writer is used, on a dup() of
        the socket's descriptor (both loops refuse a watcher on the one their
        transport owns)."""
        file = reply.file
        assert file is not None
        file.users += 1
        sending = self._sending = _Sending(reply)
        self._cork(True)
        if not self.transport.get_write_buffer_size() and self._push(sending):
            self._sent(complete=False)  # all taken, or the client is gone: on_message_complete goes on
            return
        try:
            sending.fd = os.dup(self.transport.get_extra_info("socket").fileno())
        except OSError:  # no descriptor left (EMFILE): the rest through the transport, a copy
            self.transport.write(sending.head + b"".join(reply.body)[sending.offset:])
            self._sent(complete=False)
            return
        self.flow.pause_reading()
        self.loop.add_writer(sending.fd, self._writable)

    def _push(self, sending: _Sending) -> bool:
        """Write what the socket takes of what is left: True once all is sent,
        or the client is gone (the connection then aborted)."""
        file = sending.reply.file
        assert file is not None
        fd = self.transport.get_extra_info("socket").fileno()
        try:
            while sending.head:
                sending.head = sending.head[os.write(fd, sending.head):]
            while sending.offset < file.size:
                n = os.sendfile(fd, file.fd, sending.offset, file.size - sending.offset)
                if not n:
                    break
                sending.offset += n
        except BlockingIOError:
            return False
        except OSError:
            self.transport.abort()
        return True

    def _writable(self) -> None:
        sending = self._sending
        if sending is None:
            return
        if self.transport.is_closing():  # aborted meanwhile (the write deadline): stop watching now
            self._stop_sending()
        elif not self.transport.get_write_buffer_size() and self._push(sending):  # the transport's bytes first
            self._sent(complete=True)

    def _sent(self, complete: bool) -> None:
        """The body is out: uncork, then close or (``complete``) take the next request."""
        keep_alive = self._stop_sending()
        if self.transport.is_closing():
            return
        self._cork(False)
        if not keep_alive:
            self.transport.close()
        elif complete:
            self._fast_response_complete()

    def _stop_sending(self) -> bool:
        """Forget the body being sent: its watcher, descriptor and memfd use.
        The watcher goes before the descriptor closes (a number reused while a
        loop still watches it fails the next connection that gets it)."""
        sending, self._sending = self._sending, None
        assert sending is not None and sending.reply.file is not None
        if sending.fd >= 0:
            self.loop.remove_writer(sending.fd)
            os.close(sending.fd)
            sending.fd = -1
        sending.reply.file.release()
        return sending.reply.keep_alive

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if self._sending is not None:  # pipelined behind a body being sent: after it
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))
            return
        super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        if not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading = None
        if self._answered:
            self._answered = False
            if self._sending is None:
                self._fast_response_complete(True)
            else:
                self._track()  # the body's deadline; _writable completes the response
            return
        super().on_message_complete()

    def _fast_response_complete(self, next_head: bool = False) -> None:
        """uvicorn's on_response_complete after a fast answer, with the keep-alive
        timer moved lazily; ``next_head``: and the next head's deadline starts
        (an answer written at once: the header phase goes on)."""
        if self.pipeline:
            self.on_response_complete()
            return
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        now = self.loop.time()
        self._idle_due = now + self.timeout_keep_alive
        if self.timeout_keep_alive_task is None:
            self._lazy_keep_alive = True
            self.timeout_keep_alive_task = self.loop.call_at(self._idle_due, self._keep_alive_due)
        if self._phase != "header":
            self._track()
        elif next_head:
            self._next_head(now)
            self._tracked = True

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        self._lazy_keep_alive = False
        if self._idle_due is None:
            return  # a request since: its answer arms the timer again
        if self.loop.time() < self._idle_due:
            self._lazy_keep_alive = True
            self.timeout_keep_alive_task = self.loop.call_at(self._idle_due, self._keep_alive_due)
            return
        self.timeout_keep_alive_handler()

    def _unset_keepalive_if_required(self) -> None:
        if self._lazy_keep_alive:
            self._idle_due = None  # the lazy timer stays armed and then finds the connection busy
            return
        super()._unset_keepalive_if_required()

    def _drop_lazy_keep_alive(self) -> None:
        if self._lazy_keep_alive:
            self._lazy_keep_alive = False
            self._idle_due = None
            if self.timeout_keep_alive_task is not None:
                self.timeout_keep_alive_task.cancel()
                self.timeout_keep_alive_task = None

    def on_response_complete(self) -> None:
        self._drop_lazy_keep_alive()  # uvicorn arms its own timer after an app's answer
        super().on_response_complete()
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        self._cancel_deadline()
        self._drop_lazy_keep_alive()
        if self._sending is not None:
            self._stop_sending()  # its dup() kept the socket open: it closes now
        super().connection_lost(exc)

    def _answering(self) -> bool:
        return ((self.cycle is not None and not self.cycle.response_complete) or bool(self.pipeline)
                or self._sending is not None)

    def _track(self) -> None:
        """Arm the deadline of the phase the connection is in."""
        if self.transport.is_closing():
            return
        if self._sending is not None:
            phase: str | None = "write"  # the answer must be taken within the header deadline, as before
        elif self._reading == "body":
            phase = "body"
        elif self._reading == "head" or not self._answering():
            phase = "header"  # a head arriving, or idle between requests: the next head is due
        else:
            phase = None  # a complete request being answered
        if phase == self._phase:
            return  # same phase: the deadline runs on, whatever arrives meanwhile
        self._phase = phase
        self._cancel_deadline()
        if phase == "header":
            self._got_bytes = False
            self.guard.waiting[self] = None
            self._head_due = self.loop.time() + self.guard.header_timeout
            self._deadline = self.loop.call_at(self._head_due, self._header_deadline)
        else:
            self.guard.waiting.pop(self, None)
            if phase == "body":
                self._deadline = self.loop.call_later(self.guard.body_timeout, self.expire, "body_timeout")
            elif phase == "write":
                self._deadline = self.loop.call_later(self.guard.header_timeout, self.expire, "write_timeout")

    def _next_head(self, now: float) -> None:
        """After an answer the fast path made, the next head's deadline starts
        (the header phase goes on, so _track keeps its timer: it is moved lazily)."""
        self._head_due = now + self.guard.header_timeout
        self._got_bytes = False
        waiting = self.guard.waiting
        waiting.pop(self, None)
        waiting[self] = None  # the youngest waiting again, last to be evicted

    def _header_deadline(self) -> None:
        if self.loop.time() < self._head_due:  # an answer since it was set: wait for the new one
            self._deadline = self.loop.call_at(self._head_due, self._header_deadline)
        else:
            self.expire("header_timeout")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def expire(self, reason: str) -> None:
        """Close now: a deadline passed, or the cap needs the descriptor."""
        self.guard.forget(self)
        self._cancel_deadline()
        if self.transport.is_closing():
            return
        self.guard.count(reason)
        if reason == "header_timeout" and self._got_bytes and not self._answering():
            self.transport.write(_REQUEST_TIMEOUT)  # a partial head: say why, then close
            self.transport.close()
        else:
            self.transport.abort()  # frees the descriptor now, whatever is still buffered


def _listen_queue(server: Any, length: int) -> None:
    """Lengthen the kernel's accept queue of uvicorn's listening sockets: asyncio
    listens with the accept burst, which would otherwise also be the queue
    (a short queue makes new connections wait for SYN retransmissions)."""
    for server_ in server.servers:
        for ts in server_.sockets:
            with socket.socket(fileno=os.dup(ts.fileno())) as sock:  # the same socket, a second descriptor
                sock.listen(length)


class _GuardCollector(Collector):
    """The guard's numbers in the app's /metrics, read at scrape time."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("authserver_connections_open", "Open client connections", len(self.guard.open))
        yield GaugeMetricFamily("authserver_connections_max", "The connection cap", self.guard.cap)
        closed = CounterMetricFamily("authserver_connections_closed", "Client connections closed by the guard",
                                     labels=["reason"])
        for reason, n in self.guard.closed.items():
            closed.add_metric([reason], n)
        yield closed


def guarded_protocol(guard: ConnectionGuard, fast: FastJWKS | None = None) -> type[GuardedProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``guard``."""
    return type("GuardedProtocol", (GuardedProtocol,), {"guard": guard, "fast": fast})


def event_loop(settings: Settings) -> str:
    """The event loop ``serve`` runs (``AUTHSERVER_LOOP``), for uvicorn's ``loop``:
    auto is uvloop when it is installed (the gRPC rate-limit service answered
    1.5x the decisions per CPU second on it), else asyncio."""
    installed = importlib.util.find_spec("uvloop") is not None
    if settings.loop == "uvloop" and not installed:
        raise ValueError("AUTHSERVER_LOOP=uvloop but uvloop is not installed (pip install uvloop)")
    if settings.loop == "auto":
        return "uvloop" if installed else "asyncio"
    return settings.loop


def build_server(settings: Settings) -> uvicorn.Server:
    """The uvicorn server ``serve`` runs (quickstart --with-envoy runs it too)."""
    import uvicorn

    from .app import create_app

    nofile = _nofile()
    cap = connection_cap(settings, nofile)
    if cap >= nofile:
        log.warning("AUTHSERVER_MAX_CONNECTIONS=%d is not below the descriptor limit (%d)", cap, nofile)
    guard = ConnectionGuard(cap, settings.header_timeout_seconds, settings.body_timeout_seconds)
    app = create_app(settings)
    core = app.state["core"]
    core.metrics.registry.register(_GuardCollector(guard))
    core.metrics.registry.register(GcPauses().install())
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning",
        access_log=False, proxy_headers=False, http=guarded_protocol(guard, FastJWKS(core)), ws="none", lifespan="on",
        backlog=accept_burst(nofile), loop=event_loop(settings),
    )

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            _listen_queue(self, _LISTEN_QUEUE)
            freeze_startup()  # no more full GC passes over start-up's objects: see gcpause

    return _Server(config)


def serve(settings: Settings, workers: int = 1) -> int:
    if workers <= 1:
        build_server(settings).run()
        return 0
    return _serve_workers(settings, workers)


def _serve_workers(settings: Settings, workers: int) -> int:
    """N processes on one listening socket, each with its own app and cache:
    they are replicas to each other (a change made in one reaches the others
    by Redis notices, or else by the reconcile loop on the shared database).
    The parent migrates once, binds, forks before it has any thread or loop
    (the migration's own loop is closed by then),
    restarts a worker that dies, and stops them all on SIGTERM or SIGINT."""
    import multiprocessing
    import signal

    if settings.run_migrations:
        from .db.migrate import upgrade

        upgrade(settings.database_url)  # once, not N times at once
    # one socket per worker on the same port (SO_REUSEPORT): the kernel spreads new
    # connections evenly, where one shared socket goes to whichever worker wakes first
    sock = socket.create_server((settings.host, settings.port), backlog=_LISTEN_QUEUE, reuse_port=True)
    port = sock.getsockname()[1]
    sockets = [sock, *(socket.create_server((settings.host, port), backlog=_LISTEN_QUEUE, reuse_port=True)
                        for _ in range(workers - 1))]
    ctx = multiprocessing.get_context("fork")
    stopping = False
    # the workers are replicas of one server: a portal sign-in form from one posts to another
    settings = settings if settings.portal_secret else settings.replace(portal_secret=secrets.token_urlsafe(32))

    def start(index: int) -> multiprocessing.process.BaseProcess:
        # worker 0 alone runs the metrics listener and the gRPC services (xDS, rate limits,
        # access logs): one port each; it learns the others' changes as a replica would
        first = index == 0
        mine = settings.replace(run_migrations=False, metrics_port=settings.metrics_port if first else 0,
                                xds_port=settings.xds_port if first else None,
                                ratelimit_port=settings.ratelimit_port if first else None)
        proc = ctx.Process(target=_worker, args=(mine, sockets, index, os.getpid()), name=f"authserver-worker-{index}",
                           daemon=False)
        proc.start()
        return proc

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    procs = [start(i) for i in range(workers)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving on %s:%d with %d worker processes", settings.host, port, workers)
    try:
        while not stopping:
            for i, proc in enumerate(procs):
                proc.join(timeout=0.5 / workers)
                if proc.exitcode is not None and not stopping:
                    log.error("worker %d exited with %s; starting it again", i, proc.exitcode)
                    procs[i] = start(i)
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    finally:
        for sock in sockets:
            sock.close()
    return 0


def _exit_with_parent(parent: int) -> None:
    """SIGTERM this worker when the parent dies, even by SIGKILL: workers left
    behind would keep serving the port with no one to restart or stop them.
    Linux only (prctl PR_SET_PDEATHSIG); elsewhere the parent's SIGTERM stops them."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the prctl
        os._exit(0)


def _worker(settings: Settings, sockets: list[socket.socket], index: int, parent: int) -> None:
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT):  # uvicorn installs its own when it runs
        signal.signal(signum, signal.SIG_DFL)
    _exit_with_parent(parent)
    for i, other in enumerate(sockets):
        if i != index:
            other.close()  # the parent keeps it for that worker's restart
    build_server(settings).run(sockets=[sockets[index]])
