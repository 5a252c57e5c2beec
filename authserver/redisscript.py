"""One Lua script's calls to Redis over a connection of their own, speaking
RESP directly: the rate-limit service's hot path (``ratelimit.RedisLimiter``).

redis-py spends ~160 us of CPU per script call on asyncio (its command
packing, connection pool, retry and timeout wrappers, reply parser), about
four times what the bytes on the socket cost: at the gateway's pace (a call
per loop turn) that was a quarter of a decision's CPU. Here a call is one
write of a prepacked command and a reply parsed as it arrives. Calls are made
one at a time (the caller batches the calls made meanwhile), so the
connection never holds two requests. Any failure (refused, timeout, a reply
not understood) closes the connection and raises ``ConnectionError`` or
``TimeoutError``; the next call connects again.

Plain TCP only (host, port, optional user/password, db): for a TLS or Unix
socket URL, ``for_client`` returns None and the caller keeps redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.connection import Connection

__all__ = ["ScriptConnection", "for_client"]


class RedisError(Exception):
    """An error reply (``-ERR ...``)."""


def _pack(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def _parse(buf: bytearray, pos: int) -> tuple[Any, int] | None:
    """One reply from ``buf[pos:]``: (value, next position), or None while incomplete."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, line = buf[pos], bytes(buf[pos + 1:end])
    pos = end + 2
    if kind == 0x3A:  # ':' integer
        return int(line), pos
    if kind == 0x2B:  # '+' simple string
        return line, pos
    if kind == 0x2D:  # '-' error
        return RedisError(line.decode(errors="replace")), pos
    if kind == 0x24:  # '$' bulk string
        n = int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            return None
        return bytes(buf[pos:pos + n]), pos + n + 2
    if kind == 0x2A:  # '*' array
        items = []
        for _ in range(max(0, int(line))):
            got = _parse(buf, pos)
            if got is None:
                return None
            item, pos = got
            items.append(item)
        return items, pos
    raise ConnectionError(f"redis: a reply of unknown type {kind!r}")


class _Replies(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[Any] | None = None
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.buf += data
        w = self.waiter
        if w is None or w.done():
            return
        try:
            got = _parse(self.buf, 0)
        except Exception as exc:  # noqa: BLE001  (a reply we cannot read: the connection is unusable)
            w.set_exception(ConnectionError(f"redis: unreadable reply ({type(exc).__name__})"))
            return
        if got is not None:
            del self.buf[:got[1]]
            w.set_result(got[0])

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("redis: connection lost"))


class ScriptConnection:
    def __init__(self, script: str, host: str, port: int, db: int = 0, username: str | None = None,
                 password: str | None = None, timeout: float | None = 1.0,
                 connect_timeout: float | None = 1.0) -> None:
        self.script = script.encode()
        self.sha = hashlib.sha1(self.script).hexdigest().encode()
        self.host, self.port, self.db = host, port, db
        self.auth: tuple[bytes, ...] | None = None
        if password:
            self.auth = (username.encode(), password.encode()) if username else (password.encode(),)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._proto: _Replies | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def call(self, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA (EVAL when Redis does not have the script yet): the script's reply."""
        tail = [str(len(keys)).encode(), *(k.encode() for k in keys), *(_arg(a) for a in args)]
        try:
            async with asyncio.timeout(self.timeout):
                proto = await self._connected()
                reply = await self._request(proto, _pack(b"EVALSHA", self.sha, *tail))
                if isinstance(reply, RedisError) and str(reply).startswith("NOSCRIPT"):
                    reply = await self._request(proto, _pack(b"EVAL", self.script, *tail))
        except BaseException:
            self.close()  # a request may be half sent or its reply half read
            raise
        if isinstance(reply, RedisError):
            raise reply
        return reply

    async def _connected(self) -> _Replies:
        loop = asyncio.get_running_loop()
        proto = self._proto
        if proto is not None and not proto.lost and self._loop is loop:
            return proto
        self.close()
        async with asyncio.timeout(self.connect_timeout):
            _, proto = await loop.create_connection(_Replies, self.host, self.port)
        self._proto, self._loop = proto, loop
        assert proto.transport is not None
        if self.auth is not None:
            self._check(await self._request(proto, _pack(b"AUTH", *self.auth)))
        if self.db:
            self._check(await self._request(proto, _pack(b"SELECT", str(self.db).encode())))
        return proto

    @staticmethod
    def _check(reply: Any) -> None:
        if isinstance(reply, RedisError):
            raise ConnectionError(f"redis: {reply}")

    @staticmethod
    async def _request(proto: _Replies, packed: bytes) -> Any:
        if proto.lost or proto.transport is None:
            raise ConnectionError("redis: connection lost")
        waiter = proto.waiter = asyncio.get_running_loop().create_future()
        proto.transport.write(packed)
        return await waiter

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.abort()
        self._proto = None


def _arg(a: Any) -> bytes:
    if isinstance(a, bytes):
        return a
    return repr(a).encode() if isinstance(a, float) else str(a).encode()


def for_client(redis: Redis, script: str) -> ScriptConnection | None:
    """A script connection to the server ``redis`` talks to, when it is plain TCP."""
    pool = redis.connection_pool
    kw = pool.connection_kwargs
    if pool.connection_class is not Connection or "host" not in kw:
        return None
    return ScriptConnection(script, kw["host"], int(kw.get("port", 6379)), int(kw.get("db") or 0),
                            kw.get("username"), kw.get("password"), kw.get("socket_timeout"),
                            kw.get("socket_connect_timeout"))
