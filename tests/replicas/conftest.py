from __future__ import annotations

import pytest
from _env import IN_CI, need_service
from _proc import Server, ThrowawayPostgres, ThrowawayRedis


@pytest.fixture
def redis_proc():
    need_service("Redis (for redis-server)", "127.0.0.1", 6379)
    r = ThrowawayRedis().start()
    yield r
    r.stop()


@pytest.fixture
def pg_proc():
    if not ThrowawayPostgres.available():
        if IN_CI:
            pytest.fail("PostgreSQL binaries (initdb, pg_ctl) are missing")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are missing")
    pg = ThrowawayPostgres().init().start()
    yield pg
    pg.destroy()


@pytest.fixture
def servers(tmp_path):
    started: list[Server] = []

    def make(env: dict[str, str], port: int | None = None) -> Server:
        s = Server(env, port=port, log_dir=tmp_path)
        started.append(s)
        return s

    yield make
    for s in started:
        s.kill()
