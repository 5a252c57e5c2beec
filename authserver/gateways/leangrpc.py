"""Unary gRPC calls over a lean HTTP/2 server: what the rate-limit service
needs of a gRPC server and nothing more, for a fraction of grpcio's CPU per
call (bench ratelimit: both transports side by side).

Envoy's ratelimit filter makes one unary call per request it forwards, so the
server's cost per call bounds the decisions per CPU second; grpcio's Python
layer costs ~300 us of CPU per no-op call, this one ~50 us.

Scope (RFC 9113 and gRPC's "PROTOCOL-HTTP2"): cleartext with prior knowledge,
or TLS with ALPN ``h2``; one request message and one answer per stream, to
the methods it is given; header blocks decoded by ``hpack``; flow control
both ways. A call to another method, a compressed message or a malformed one
gets the gRPC status the protocol prescribes; a broken frame ends the
connection with GOAWAY. Memory is bounded: a message cap, a header block cap,
a cap on concurrent streams, and reading stops while the peer does not read.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hpack import Decoder, HPACKError, NeverIndexedHeaderTuple
from hpack import Encoder as _Encoder

__all__ = ["GrpcError", "Handler", "Peer", "UnaryServer", "server_tls"]

log = logging.getLogger("authserver.xds")

# gRPC status codes used here (grpc/status.h)
INVALID_ARGUMENT = 3
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, \
    _CONTINUATION = range(10)
_END_STREAM = _ACK = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY_FLAG = 0x20
# error codes (RFC 9113 section 7)
_NO_ERROR, _PROTOCOL_ERROR, _INTERNAL_ERROR, _FLOW_CONTROL_ERROR = 0, 1, 2, 3
_STREAM_CLOSED, _FRAME_SIZE_ERROR, _REFUSED_STREAM, _CANCEL, _COMPRESSION_ERROR = 5, 6, 7, 8, 9
_ENHANCE_YOUR_CALM = 0xB

_MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE: the default, ours and the least a peer may set
_MAX_WINDOW = 2**31 - 1
_RECV_WINDOW = 1 << 24  # the connection window we keep open for the peer's requests
_HEADER_BLOCK_CAP = 65536  # an encoded header block (with CONTINUATIONs)


class GrpcError(Exception):
    """A call answered with a gRPC status other than OK."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is calling: the address for logs, and with TLS the CN and SANs of
    its client certificate (empty over cleartext)."""

    address: str
    names: frozenset[str] = field(default_factory=frozenset)


# a method: the request message's bytes to the answer's, at once or awaited
Handler = Callable[[bytes, Peer], bytes | Awaitable[bytes]]


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def _block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A header block that leaves the peer's HPACK table as it is (never
    indexed): the same bytes fit every connection, so constant ones are made once."""
    return bytes(_Encoder().encode([NeverIndexedHeaderTuple(k, v) for k, v in headers]))


_ANSWER_HEAD = _block([(b":status", b"200"), (b"content-type", b"application/grpc")])
_OK_TRAILERS = _block([(b"grpc-status", b"0")])


_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F) if c != 0x25)  # grpc-message keeps these, % escapes the rest


def _status_block(code: int, message: str) -> bytes:
    """Trailers-only answer (headers that end the stream) with a status."""
    return _block([(b":status", b"200"), (b"content-type", b"application/grpc"),
                   (b"grpc-status", str(code).encode()),
                   (b"grpc-message", quote(message, safe=_PRINTABLE).encode())])


class _Stream:
    __slots__ = ("handler", "body", "window", "ended")

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.ended = False  # the request is complete: the call runs or waits for window
        self.body = bytearray()
        self.window = 0  # credit the peer gave this stream beyond its initial window


class _Connection(asyncio.Protocol):
    def __init__(self, server: UnaryServer) -> None:
        self.server = server
        self.transport: Any = None
        self.peer = Peer("?")
        self.buf = bytearray()
        self.started = False
        self.decoder = Decoder(max_header_list_size=16384)
        self.streams: dict[int, _Stream] = {}
        self.running: dict[int, asyncio.Future[Any]] = {}
        self.last_stream = 0
        self.header_block: bytearray | None = None  # a HEADERS frame awaiting its CONTINUATIONs
        self.header_stream = 0
        self.header_end = False
        # what the peer allows us to send
        self.send_window = 65535
        self.initial_window = 65535
        self.max_frame = _MAX_FRAME
        self.blocked: deque[tuple[int, bytes]] = deque()  # answers waiting for window
        self.received = 0  # connection window consumed since our last WINDOW_UPDATE
        self.buffered = 0  # bytes of requests not complete yet (capped: see UnaryServer)
        self.outbox: list[bytes] = []  # frames of answers that ended this loop turn
        self.seen: dict[bytes, tuple[bytes, bytes, bytes, bytes]] = {}  # header blocks decoded (see _request)
        self.goaway = False
        self.preface_timer: asyncio.TimerHandle | None = None

    # -- connection

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        srv = self.server
        if len(srv.connections) >= srv.max_connections:
            log.warning("rate-limit listener: refused a connection, %d open (the cap)", srv.max_connections)
            transport.abort()
            return
        srv.connections.add(self)
        peername = transport.get_extra_info("peername")
        address = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        self.peer = Peer(address, _cert_names(transport.get_extra_info("peercert")))
        transport.write(_frame(_SETTINGS, 0, 0, srv.settings_payload)
                        + _frame(_WINDOW_UPDATE, 0, 0, (_RECV_WINDOW - 65535).to_bytes(4, "big")))
        self.preface_timer = asyncio.get_running_loop().call_later(srv.preface_timeout, self._no_preface)

    def _no_preface(self) -> None:
        if not self.started:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.preface_timer is not None:
            self.preface_timer.cancel()
        self.streams.clear()
        self.blocked.clear()

    def pause_writing(self) -> None:
        self.transport.pause_reading()  # the peer does not read its answers: take no more calls

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def _fail(self, error: int, why: str) -> None:
        """A connection error: GOAWAY, then close."""
        log.warning("rate-limit listener: closed the connection from %s: %s", self.peer.address, why)
        self.transport.write(_frame(_GOAWAY, 0, 0, self.last_stream.to_bytes(4, "big") + error.to_bytes(4, "big")))
        self.transport.close()
        self.buf.clear()

    def shutdown(self) -> None:
        """Stopping: no new calls; those in flight still get their answers."""
        if not self.transport.is_closing():
            self.transport.write(_frame(_GOAWAY, 0, 0, self.last_stream.to_bytes(4, "big") + bytes(4)))
            self.goaway = True
            if not self.running and not self.outbox:
                self.transport.close()

    # -- reading

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.started:
            if len(buf) < len(_PREFACE):
                if not _PREFACE.startswith(bytes(buf)):
                    self._fail(_PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            if buf[:len(_PREFACE)] != _PREFACE:
                self._fail(_PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            del buf[:len(_PREFACE)]
            self.started = True
        pos, end = 0, len(buf)
        out: list[bytes] = []
        while end - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if length > _MAX_FRAME:
                self._fail(_FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                return
            if end - pos - 9 < length:
                break
            kind, flags = buf[pos + 3], buf[pos + 4]
            stream = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            if not self._frame(kind, flags, stream, payload, out):
                return  # failed: the connection is closing
        del buf[:pos]
        if self.received >= _RECV_WINDOW // 2:
            out.append(_frame(_WINDOW_UPDATE, 0, 0, self.received.to_bytes(4, "big")))
            self.received = 0
        if out:
            self.transport.write(b"".join(out))

    def _frame(self, kind: int, flags: int, stream: int, payload: bytes, out: list[bytes]) -> bool:
        if self.header_block is not None and kind != _CONTINUATION:
            self._fail(_PROTOCOL_ERROR, "a frame inside a header block")
            return False
        if kind == _DATA:
            return self._data(flags, stream, payload, out)
        if kind == _HEADERS:
            return self._headers(flags, stream, payload, out)
        if kind == _CONTINUATION:
            if self.header_block is None or stream != self.header_stream:
                self._fail(_PROTOCOL_ERROR, "a CONTINUATION out of place")
                return False
            self.header_block += payload
            if len(self.header_block) > _HEADER_BLOCK_CAP:
                self._fail(_ENHANCE_YOUR_CALM, "a header block over 64 KiB")
                return False
            if flags & _END_HEADERS:
                block, self.header_block = bytes(self.header_block), None
                return self._request(stream, block, self.header_end, out)
            return True
        if kind == _SETTINGS:
            return self._settings(flags, stream, payload, out)
        if kind == _WINDOW_UPDATE:
            return self._window_update(stream, payload, out)
        if kind == _PING:
            if len(payload) != 8 or stream:
                self._fail(_FRAME_SIZE_ERROR if len(payload) != 8 else _PROTOCOL_ERROR, "a bad PING")
                return False
            if not flags & _ACK:
                out.append(_frame(_PING, _ACK, 0, payload))
            return True
        if kind == _RST_STREAM:
            if not stream or len(payload) != 4:
                self._fail(_PROTOCOL_ERROR, "a bad RST_STREAM")
                return False
            if stream in self.streams:
                self._forget(stream)  # a call in flight is answered to no one
            return True
        if kind == _GOAWAY:
            self.goaway = True  # the peer opens no more streams; answer those in flight
            if not self.running and not self.outbox:
                self.transport.close()
            return True
        if kind == _PUSH_PROMISE:
            self._fail(_PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            return False
        return True  # PRIORITY and unknown types: ignored, as the RFC says

    def _headers(self, flags: int, stream: int, payload: bytes, out: list[bytes]) -> bool:
        if not stream or not stream & 1:
            self._fail(_PROTOCOL_ERROR, "HEADERS on an even or zero stream")
            return False
        if flags & _PADDED:
            if not payload or payload[0] >= len(payload):
                self._fail(_PROTOCOL_ERROR, "bad padding")
                return False
            payload = payload[1:len(payload) - payload[0]]
        if flags & _PRIORITY_FLAG:
            payload = payload[5:]
        if not flags & _END_HEADERS:
            self.header_block, self.header_stream, self.header_end = bytearray(payload), stream, bool(
                flags & _END_STREAM)
            return True
        return self._request(stream, payload, bool(flags & _END_STREAM), out)

    def _request(self, stream: int, block: bytes, ended: bool, out: list[bytes]) -> bool:
        what = self.seen.get(block)
        if what is None:
            try:
                what = _what(self.decoder.decode(block, raw=True))
            except HPACKError as e:
                self._fail(_COMPRESSION_ERROR, f"undecodable headers ({type(e).__name__})")
                return False
            # A block that inserts nothing in the HPACK table leaves it as it was, so
            # the same bytes mean the same headers until a block that changes the table:
            # Envoy's calls (indexed fields and its :path as a literal without indexing,
            # after the first two) are decoded once, not at ~30-60 us each.
            if _keeps_table(block):
                if len(self.seen) >= 64:
                    self.seen.clear()
                self.seen[block] = what
            else:
                self.seen.clear()
        call = self.streams.get(stream)
        if call is not None:  # trailers after the message: they end the request
            if ended and not call.ended:
                self._end(stream, out)
            return True
        if stream <= self.last_stream:
            self._fail(_STREAM_CLOSED if stream in self.running else _PROTOCOL_ERROR, "a stream id reused")
            return False
        self.last_stream = stream
        if self.goaway:
            out.append(_frame(_RST_STREAM, 0, stream, _REFUSED_STREAM.to_bytes(4, "big")))
            return True
        if len(self.streams) >= self.server.max_streams:
            out.append(_frame(_RST_STREAM, 0, stream, _REFUSED_STREAM.to_bytes(4, "big")))
            return True
        method, path, content_type, encoding = what
        handler = self.server.handlers.get(path)
        if method != b"POST" or not content_type.startswith(b"application/grpc"):
            self._refuse(stream, ended, INVALID_ARGUMENT, "not a gRPC call", out)
        elif handler is None:
            self._refuse(stream, ended, UNIMPLEMENTED, "unknown method", out)
        elif encoding not in (b"", b"identity"):
            self._refuse(stream, ended, UNIMPLEMENTED, "compressed messages are not accepted", out)
        else:
            self.streams[stream] = _Stream(handler)
            if ended:
                self._end(stream, out)
        return True

    @staticmethod
    def _refuse(stream: int, ended: bool, code: int, message: str, out: list[bytes]) -> None:
        """Answer with a status before the request's end if need be, and then
        ask the client to stop sending it (RFC 9113 section 8.1: RST_STREAM NO_ERROR)."""
        out.append(_frame(_HEADERS, _END_HEADERS | _END_STREAM, stream, _status_block(code, message)))
        if not ended:
            out.append(_frame(_RST_STREAM, 0, stream, _NO_ERROR.to_bytes(4, "big")))

    def _data(self, flags: int, stream: int, payload: bytes, out: list[bytes]) -> bool:
        self.received += len(payload)  # padding included: it counts against the window
        if flags & _PADDED:
            if not payload or payload[0] >= len(payload):
                self._fail(_PROTOCOL_ERROR, "bad padding")
                return False
            payload = payload[1:len(payload) - payload[0]]
        call = self.streams.get(stream)
        if call is None or call.ended:
            if not stream or stream > self.last_stream:
                self._fail(_PROTOCOL_ERROR, "DATA on a stream never opened")
                return False
            return True  # after the request's end, reset or answered already: dropped
        if len(call.body) + len(payload) > self.server.max_message + 5:
            self._forget(stream)
            self._refuse(stream, bool(flags & _END_STREAM), RESOURCE_EXHAUSTED,
                         f"a request over {self.server.max_message} bytes", out)
            return True
        call.body += payload
        self.buffered += len(payload)
        if self.buffered > self.server.max_buffered:
            self._fail(_ENHANCE_YOUR_CALM, f"over {self.server.max_buffered} bytes of unfinished requests")
            return False
        if flags & _END_STREAM:
            self._end(stream, out)
        return True

    def _settings(self, flags: int, stream: int, payload: bytes, out: list[bytes]) -> bool:
        if stream or len(payload) % 6 or (flags & _ACK and payload):
            self._fail(_FRAME_SIZE_ERROR if len(payload) % 6 else _PROTOCOL_ERROR, "a bad SETTINGS frame")
            return False
        if flags & _ACK:
            return True
        for i in range(0, len(payload), 6):
            ident, value = struct.unpack_from(">HI", payload, i)
            if ident == 0x4:  # INITIAL_WINDOW_SIZE: applies to the streams open now too
                if value > _MAX_WINDOW:
                    self._fail(_FLOW_CONTROL_ERROR, "a window over 2^31-1")
                    return False
                self.initial_window = value
            elif ident == 0x5:  # MAX_FRAME_SIZE
                if not _MAX_FRAME <= value <= 2**24 - 1:
                    self._fail(_PROTOCOL_ERROR, "a bad MAX_FRAME_SIZE")
                    return False
                self.max_frame = value
        out.append(_frame(_SETTINGS, _ACK, 0))
        self._flush(out)
        return True

    def _window_update(self, stream: int, payload: bytes, out: list[bytes]) -> bool:
        if len(payload) != 4:
            self._fail(_FRAME_SIZE_ERROR, "a bad WINDOW_UPDATE")
            return False
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if not stream:
            if not increment or self.send_window + increment > _MAX_WINDOW:
                self._fail(_FLOW_CONTROL_ERROR if increment else _PROTOCOL_ERROR, "a bad window increment")
                return False
            self.send_window += increment
        else:
            call = self.streams.get(stream)
            if call is not None:
                call.window += increment
        self._flush(out)
        return True

    def _forget(self, stream: int) -> None:
        """A stream reset or refused: its request's bytes are no longer held."""
        call = self.streams.pop(stream)
        self.buffered -= len(call.body)

    # -- calls

    def _end(self, stream: int, out: list[bytes]) -> None:
        """The request is complete: check the message, then call its method."""
        call = self.streams[stream]
        call.ended = True
        body = call.body
        self.buffered -= len(body)
        call.body = bytearray()
        if len(body) < 5 or int.from_bytes(body[1:5], "big") != len(body) - 5 or body[0]:
            del self.streams[stream]
            self._refuse(stream, True, *((UNIMPLEMENTED, "compressed messages are not accepted") if body[:1] == b"\x01"
                                         else (INVALID_ARGUMENT, "expected one request message")), out)
            return
        try:
            result = call.handler(bytes(body[5:]), self.peer)
        except GrpcError as e:
            self.streams.pop(stream)
            out.append(_frame(_HEADERS, _END_HEADERS | _END_STREAM, stream, _status_block(e.code, e.message)))
            return
        except Exception:
            log.exception("rate-limit listener: a call failed")
            self.streams.pop(stream)
            out.append(_frame(_HEADERS, _END_HEADERS | _END_STREAM, stream, _status_block(INTERNAL, "internal error")))
            return
        if isinstance(result, bytes):
            self._answer(stream, result, out)
            return
        task = asyncio.ensure_future(result)
        self.running[stream] = task
        task.add_done_callback(lambda t: self._done(stream, t))

    def _done(self, stream: int, task: asyncio.Future[Any]) -> None:
        self.running.pop(stream, None)
        if self.transport.is_closing() or stream not in self.streams:
            return  # reset by the peer meanwhile, or the connection is gone
        out: list[bytes] = []
        if task.cancelled():
            self.streams.pop(stream)
            out.append(_frame(_HEADERS, _END_HEADERS | _END_STREAM, stream, _status_block(UNAVAILABLE, "stopping")))
        elif (e := task.exception()) is not None:
            self.streams.pop(stream)
            if isinstance(e, GrpcError):
                block = _status_block(e.code, e.message)
            else:
                log.error("rate-limit listener: a call failed", exc_info=e)
                block = _status_block(INTERNAL, "internal error")
            out.append(_frame(_HEADERS, _END_HEADERS | _END_STREAM, stream, block))
        else:
            self._answer(stream, task.result(), out)
        if not self.outbox:  # the calls that end in this loop turn leave in one write
            asyncio.get_running_loop().call_soon(self._write_out)
        self.outbox += out

    def _write_out(self) -> None:
        out, self.outbox = self.outbox, []
        if not self.transport.is_closing():
            self.transport.write(b"".join(out))
            if self.goaway and not self.running:
                self.transport.close()

    def _answer(self, stream: int, message: bytes, out: list[bytes]) -> None:
        data = b"\x00" + len(message).to_bytes(4, "big") + message
        if self.blocked or not self._fits(stream, len(data)):
            self.blocked.append((stream, data))  # in order, when the peer gives window
            return
        self._send(stream, data, out)

    def _fits(self, stream: int, size: int) -> bool:
        call = self.streams[stream]
        return size <= self.send_window and size <= self.initial_window + call.window

    def _send(self, stream: int, data: bytes, out: list[bytes]) -> None:
        self.send_window -= len(data)
        del self.streams[stream]
        out.append(_frame(_HEADERS, _END_HEADERS, stream, _ANSWER_HEAD))
        step = self.max_frame
        for i in range(0, len(data), step):
            out.append(_frame(_DATA, 0, stream, data[i:i + step]))
        out.append(_frame(_HEADERS, _END_HEADERS | _END_STREAM, stream, _OK_TRAILERS))

    def _flush(self, out: list[bytes]) -> None:
        """Answers held for window, in order, as far as the window now goes."""
        blocked = self.blocked
        while blocked:
            stream, data = blocked[0]
            if stream not in self.streams:  # reset meanwhile
                blocked.popleft()
                continue
            if not self._fits(stream, len(data)):
                return
            blocked.popleft()
            self._send(stream, data, out)


def _keeps_table(block: bytes) -> bool:
    """Whether a header block (already decoded) leaves the HPACK table as it
    was: indexed fields and literals without indexing only (RFC 7541 section
    6), no insertion and no table size update."""
    i, n = 0, len(block)
    while i < n:
        first = block[i]
        if first & 0x80:  # indexed field
            i = _hpack_int(block, i, 0x7F)[1]
        elif first & 0xE0 == 0:  # literal without indexing (0000) or never indexed (0001)
            named_by_index = first & 0x0F
            i = _hpack_int(block, i, 0x0F)[1]
            for _ in range(2 if not named_by_index else 1):  # the name if literal, then the value
                length, i = _hpack_int(block, i, 0x7F)
                i += length
        else:  # 01: incremental indexing, 001: size update
            return False
    return i == n


def _hpack_int(block: bytes, i: int, mask: int) -> tuple[int, int]:
    """An HPACK integer with a prefix of ``mask`` bits at ``i``: its value and the index after it."""
    value = block[i] & mask
    i += 1
    if value == mask:
        shift = 0
        while True:
            byte = block[i]
            i += 1
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
    return value, i


def _what(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, bytes, bytes, bytes]:
    """What a request's headers say of the call: method, path, content type, message encoding."""
    method = path = content_type = encoding = b""
    for name, value in headers:
        if name == b":path":
            path = value
        elif name == b":method":
            method = value
        elif name == b"content-type":
            content_type = value
        elif name == b"grpc-encoding":
            encoding = value
    return method, path, content_type, encoding


def _cert_names(cert: Mapping[str, Any] | None) -> frozenset[str]:
    """The CN and SANs of a verified client certificate (as grpc's auth context names them)."""
    if not cert:
        return frozenset()
    names = {value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"}
    names.update(value for _kind, value in cert.get("subjectAltName", ()))
    return frozenset(names)


def server_tls(cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    """TLS requiring a client certificate signed by ``client_ca``, ALPN h2."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["h2"])
    return ctx


class UnaryServer:
    """Listens on ``host:port`` and answers unary calls to ``handlers``
    (``/package.Service/Method`` -> handler)."""

    def __init__(self, handlers: Mapping[str, Handler], *, tls: ssl.SSLContext | None = None,
                 max_message: int = 65536, max_streams: int = 512, max_connections: int = 256,
                 max_buffered: int = 1 << 20, preface_timeout: float = 10.0) -> None:
        """``max_buffered``: the bytes of unfinished requests one connection
        may hold (over it: GOAWAY), so memory is bounded by connections x this."""
        self.handlers = {k.encode(): v for k, v in handlers.items()}
        self.tls = tls
        self.max_message = max_message
        self.max_streams = max_streams
        self.max_connections = max_connections
        self.max_buffered = max_buffered
        self.preface_timeout = preface_timeout
        # our SETTINGS: concurrent streams, a stream window that holds a whole request, header list size
        self.settings_payload = struct.pack(">HIHIHI", 0x3, max_streams, 0x4, max_message + 5 + 9, 0x6, 16384)
        self.connections: set[_Connection] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Connection(self), host, port, ssl=self.tls,
                                               reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self, grace: float = 0.5) -> None:
        if self.server is None:
            return
        self.server.close()
        for conn in list(self.connections):
            conn.shutdown()
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.running for c in self.connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.transport.close()
        await self.server.wait_closed()
        self.server = None
