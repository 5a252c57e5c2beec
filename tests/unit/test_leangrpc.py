"""The lean HTTP/2 transport for unary gRPC calls (gateways/leangrpc.py),
driven by grpcio's client (an independent implementation) and by raw frames
for what a well-behaved client never sends."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hpack import Decoder, Encoder

from authserver.gateways.leangrpc import INVALID_ARGUMENT, GrpcError, Peer, UnaryServer

ECHO = "/test.Echo/Echo"
SLOW = "/test.Echo/Slow"
FAIL = "/test.Echo/Fail"
BROKEN = "/test.Echo/Broken"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _echo(message: bytes, peer: Peer) -> bytes:
    return message[::-1]


async def _slow(message: bytes, peer: Peer) -> bytes:
    await asyncio.sleep(float(message.decode() or "0"))
    return b"slept " + message


def _fail(message: bytes, peer: Peer) -> bytes:
    raise GrpcError(INVALID_ARGUMENT, "no thanks: 100% sure \u2713")


async def _broken(message: bytes, peer: Peer) -> bytes:
    raise RuntimeError("a bug of ours")


class _Running:
    def __init__(self, **opts: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = UnaryServer({ECHO: _echo, SLOW: _slow, FAIL: _fail, BROKEN: _broken}, **opts)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> _Running:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start("127.0.0.1", 0), self.loop).result(5)
        self.target = f"127.0.0.1:{self.server.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def running() -> Iterator[_Running]:
    with _Running() as r:
        yield r


def _call(channel: grpc.Channel, method: str, message: bytes, timeout: float = 5) -> bytes:
    stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return stub(message, timeout=timeout)  # type: ignore[no-any-return]


def test_unary_calls_from_grpcio(running):
    with grpc.insecure_channel(running.target) as ch:
        assert _call(ch, ECHO, b"hello") == b"olleh"
        assert _call(ch, ECHO, b"") == b""
        assert _call(ch, SLOW, b"0.01") == b"slept 0.01"
        big = bytes(range(256)) * 200  # 51 KB: several DATA frames each way
        assert _call(ch, ECHO, big) == big[::-1]


def test_many_concurrent_calls_on_one_connection(running):
    """As Envoy sends them: one connection, calls interleaved, each answered with its own."""
    with grpc.insecure_channel(running.target) as ch:
        stub = ch.unary_unary(SLOW, request_serializer=None, response_deserializer=None)
        futures = [stub.future(f"0.0{i % 5}".encode(), timeout=10) for i in range(300)]
        assert [f.result() for f in futures] == [f"slept 0.0{i % 5}".encode() for i in range(300)]


def test_errors_are_grpc_statuses(running):
    with grpc.insecure_channel(running.target) as ch:
        with pytest.raises(grpc.RpcError) as err:
            _call(ch, "/test.Echo/Nope", b"x")
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as err:
            _call(ch, FAIL, b"x")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "no thanks: 100% sure \u2713"  # percent-encoded on the wire, decoded by grpcio
        with pytest.raises(grpc.RpcError) as err:
            _call(ch, BROKEN, b"x")
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "bug" not in (err.value.details() or "")  # our failure stays in our log
        with pytest.raises(grpc.RpcError) as err:
            _call(ch, ECHO, b"x" * 70_000)  # over the 64 KiB message cap
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _call(ch, ECHO, b"still here") == b"ereh llits"  # the connection serves on


def test_a_client_deadline_leaves_the_connection_usable(running):
    with grpc.insecure_channel(running.target) as ch:
        with pytest.raises(grpc.RpcError) as err:
            _call(ch, SLOW, b"0.5", timeout=0.05)  # the client resets the stream
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.6)  # the late answer is dropped, not sent on the reset stream
        assert _call(ch, ECHO, b"ab") == b"ba"


# --- raw frames ------------------------------------------------------------


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


class _Raw:
    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.buf = b""
        self.decoder = Decoder()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frames(self, until: float = 1.0) -> list[tuple[int, int, int, bytes]]:
        """Frames until the socket is quiet for ``until`` s or closed."""
        out = []
        self.sock.settimeout(until)
        while True:
            while len(self.buf) >= 9 and len(self.buf) >= 9 + int.from_bytes(self.buf[:3], "big"):
                n = int.from_bytes(self.buf[:3], "big")
                out.append((self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big"), self.buf[9:9 + n]))
                self.buf = self.buf[9 + n:]
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return out
            except ConnectionResetError:  # closed with our bytes unread: a reset
                data = b""
            if not data:
                out.append((-1, 0, 0, b""))  # closed
                return out
            self.buf += data

    def call_frames(self, stream: int, path: str, message: bytes) -> bytes:
        block = Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", path),
                                  (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers")])
        data = b"\x00" + struct.pack(">I", len(message)) + message
        return _frame(1, 4, stream, block) + _frame(0, 1, stream, data)


def _goaway_code(frames: list[tuple[int, int, int, bytes]]) -> int | None:
    return next((int.from_bytes(p[4:8], "big") for t, _, _, p in frames if t == 7), None)


def test_not_http2_is_closed(running):
    raw = _Raw(running.target)
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    frames = raw.frames()
    assert _goaway_code(frames) == 1 and frames[-1][0] == -1  # PROTOCOL_ERROR, closed


def test_an_oversized_frame_ends_the_connection(running):
    raw = _Raw(running.target)
    raw.send(PREFACE + _frame(4, 0, 0) + (20000).to_bytes(3, "big") + bytes((0, 0)) + (1).to_bytes(4, "big"))
    frames = raw.frames()
    assert _goaway_code(frames) == 6 and frames[-1][0] == -1  # FRAME_SIZE_ERROR


def test_answers_wait_for_the_peers_window(running):
    """A peer that gives no window gets its answer only once it does (flow control)."""
    raw = _Raw(running.target)
    settings = struct.pack(">HI", 0x4, 0)  # INITIAL_WINDOW_SIZE 0: no DATA until a WINDOW_UPDATE
    raw.send(PREFACE + _frame(4, 0, 0, settings) + raw.call_frames(1, ECHO, b"abc"))
    first = raw.frames(0.5)
    assert not [f for f in first if f[0] == 0 and f[2] == 1]  # no DATA on the stream yet
    raw.send(_frame(8, 0, 1, (100).to_bytes(4, "big")))
    later = raw.frames(0.5)
    data = [p for t, _, s, p in later if t == 0 and s == 1]
    assert data == [b"\x00\x00\x00\x00\x03cba"]
    assert any(t == 1 and f & 1 and s == 1 for t, f, s, _ in later)  # trailers end the stream


def test_pings_are_answered_and_a_stream_past_the_cap_is_refused():
    with _Running(max_streams=1) as r:
        raw = _Raw(r.target)
        raw.send(PREFACE + _frame(4, 0, 0) + _frame(6, 0, 0, b"12345678")
                 + raw.call_frames(1, SLOW, b"0.3") + raw.call_frames(3, ECHO, b"x"))
        frames = raw.frames(1.0)
        assert (6, 1, 0, b"12345678") in frames  # PING ACK
        assert any(t == 3 and s == 3 and p == (7).to_bytes(4, "big") for t, _, s, p in frames)  # REFUSED_STREAM
        assert any(t == 0 and s == 1 and p.endswith(b"slept 0.3") for t, _, s, p in frames)


def test_unfinished_requests_past_the_connection_cap_end_it():
    """Memory per connection is bounded: streams opened and never ended, past
    ``max_buffered`` bytes, close the connection (other connections serve on)."""
    with _Running(max_buffered=100_000) as r:
        raw = _Raw(r.target)
        block = Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", ECHO),
                                  (":authority", "x"), ("content-type", "application/grpc")])
        chunk = b"\x00" + struct.pack(">I", 60_000) + b"x" * 15_000  # a 60 KB message, a quarter sent
        raw.send(PREFACE + _frame(4, 0, 0) + b"".join(_frame(1, 4, s, block) + _frame(0, 0, s, chunk)
                                                     for s in range(1, 19, 2)))  # 9 x 15 KB
        frames = raw.frames()
        assert _goaway_code(frames) == 0xB and frames[-1][0] == -1  # ENHANCE_YOUR_CALM, closed
        with grpc.insecure_channel(r.target) as ch:
            assert _call(ch, ECHO, b"ok") == b"ko"


def test_header_blocks_decoded_once_mean_what_the_table_says():
    """Indexed-only blocks are remembered; a block that changes the HPACK table
    forgets them, so the same bytes then mean the new entries (a cache that
    outlived the table would send this call to the wrong method)."""

    def literal(name_index: int, value: bytes) -> bytes:  # literal with incremental indexing, indexed name
        return bytes((0x40 | name_index, len(value))) + value

    def call(stream: int, block: bytes, message: bytes) -> bytes:
        return _frame(1, 4, stream, block) + _frame(0, 1, stream, b"\x00" + struct.pack(">I", len(message)) + message)

    grpc_type = literal(31, b"application/grpc")  # content-type
    to_echo = b"\x83\x86" + literal(4, ECHO.encode()) + grpc_type  # table: 62 content-type, 63 :path Echo
    to_fail = b"\x83\x86" + literal(4, FAIL.encode()) + grpc_type  # table: 62 content-type, 63 :path Fail, ...
    indexed = b"\x83\x86\xbf\xbe"  # POST, http, index 63, index 62: the same bytes, whatever they name
    with _Running() as r:
        raw = _Raw(r.target)
        # as Envoy sends them: :path a literal without indexing (it changes no table), the rest indexed
        envoy_like = b"\x83\x86" + bytes((0x04, len(ECHO))) + ECHO.encode() + b"\xbe"
        raw.send(PREFACE + _frame(4, 0, 0) + call(1, to_echo, b"ab") + call(3, indexed, b"cd")
                 + call(5, indexed, b"ef") + call(7, to_fail, b"x") + call(9, indexed, b"y")
                 + call(11, envoy_like, b"gh") + call(13, envoy_like, b"ij"))
        frames = raw.frames(1.0)
        data = {s: p[5:] for t, _, s, p in frames if t == 0}
        assert data == {1: b"ba", 3: b"dc", 5: b"fe", 11: b"hg", 13: b"ji"}  # 5 and 13: decoded once
        statuses = {s: dict(Decoder().decode(p)) for t, _, s, p in frames if t == 1 and s in (7, 9)}
        assert statuses[7]["grpc-status"] == statuses[9]["grpc-status"] == "3"  # both went to Fail
