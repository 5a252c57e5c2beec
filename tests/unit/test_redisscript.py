"""A script's own RESP connection (redisscript), on the real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from authserver.redisscript import RedisError, ScriptConnection, for_client

# unique per run: Redis does not have it cached, so the first call goes EVALSHA -> NOSCRIPT -> EVAL
_SCRIPT = """-- {tag}
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 60)
return {{v, tonumber(ARGV[2] * 2), #KEYS}}
"""


async def test_calls_load_the_script_once_and_count_in_the_url_db(redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/1"
    r = aioredis.from_url(url)
    conn = for_client(r, _SCRIPT.format(tag=uuid.uuid4().hex))
    assert conn is not None and conn.db == 1
    key = f"test-rs-{uuid.uuid4().hex[:8]}"
    try:
        assert await conn.call([key], [5, 1.5]) == [5, 3, 1]  # not cached yet: EVAL
        assert await r.script_exists(conn.sha.decode()) == [True]
        assert await conn.call([key], [2, 0.5]) == [7, 1, 1]  # EVALSHA
        assert int(await r.get(key)) == 7  # in db 1, as the URL says
    finally:
        conn.close()
        await r.delete(key)
        await r.aclose()


async def test_an_error_reply_raises_and_the_connection_stays_usable(redis_url):
    r = aioredis.from_url(redis_url)
    conn = for_client(r, "return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert conn is not None
    key = f"test-rs-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(RedisError):
            await conn.call([key], ["not-a-number"])
        assert await conn.call([key], [3]) == 3
    finally:
        conn.close()
        await r.delete(key)
        await r.aclose()


async def test_nothing_listening_raises_connection_error():
    from _proc import free_port

    conn = ScriptConnection("return 1", "127.0.0.1", free_port(), connect_timeout=0.5)
    with pytest.raises(OSError):  # ConnectionError is an OSError, as a refused connect is
        await conn.call([], [])


def test_tls_and_unix_urls_keep_redis_py():
    assert for_client(aioredis.from_url("rediss://127.0.0.1:6379/0"), "return 1") is None
    assert for_client(aioredis.from_url("unix:///tmp/redis.sock"), "return 1") is None


async def test_a_server_that_does_not_answer_times_out_and_the_next_call_reconnects(redis_url):
    import asyncio

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads, never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = ScriptConnection("return 1", "127.0.0.1", port, timeout=0.2)
    try:
        with pytest.raises(TimeoutError):
            await conn.call([], [])
        assert conn._proto is None  # closed: its reply may still come
        conn.port = int(redis_url.removeprefix("redis://").partition(":")[2].split("/")[0])  # the real one
        assert await conn.call([], []) == 1
    finally:
        conn.close()
        server.close()
        await server.wait_closed()


def test_calls_on_uvloop_when_installed(redis_url):
    """uvloop's transports are not asyncio.Transport subclasses."""
    uvloop = pytest.importorskip("uvloop")
    import asyncio

    async def run() -> None:
        r = aioredis.from_url(redis_url)
        conn = for_client(r, "return tonumber(ARGV[1]) + 1")
        assert conn is not None
        try:
            assert [await conn.call([], [i]) for i in range(3)] == [1, 2, 3]
        finally:
            conn.close()
            await r.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
