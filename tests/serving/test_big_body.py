"""A JWKS body over 1 MiB, which `authserver serve` sends from a memfd with
sendfile (authserver.serving.BodyFiles): the same bytes as the app's route,
in order with pipelined requests, closed after Connection: close, and a client
that does not read it is closed by the write deadline without harm to others."""

from __future__ import annotations

import json
import os
import socket
import time

import httpx
import pytest
from _env import METRICS_HEADERS
from _proc import Server, cli, event_loop
from test_fast_path import exchange, get
from test_slow_clients import closed_after, metric_value

from bench.suites import _seed

HEADER_TIMEOUT = 3.0
KEYS = 10_000  # RS256: 4.5 MB, more than the loopback socket buffers of a client that does not read take


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("big")
    env = {"AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp / 'authserver.db'}", "AUTHSERVER_LOG_JSON": "false",
           "AUTHSERVER_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT)}
    cli(env, "tenant", "create", "default", "--json", "--algorithm", "RS256")
    _seed(tmp / "authserver.db", "default", "RS256", KEYS)
    return env, tmp


@pytest.fixture(scope="module")
def server(seeded, loop):
    env, tmp = seeded
    s = Server({**env, "AUTHSERVER_LOOP": loop}, log_dir=tmp).start(timeout=120)
    assert s.proc is not None and event_loop(s.proc.pid) == loop
    yield s
    s.kill()


def memfds(pid: int) -> int:
    return sum(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:jwks") for fd in os.listdir(f"/proc/{pid}/fd"))


def test_sent_from_a_memfd_the_same_bytes_in_order(server):
    app = httpx.get(f"{server.url}/t/%64efault/.well-known/jwks.json", timeout=30).content  # Litestar's route
    assert len(json.loads(app)["keys"]) >= KEYS and len(app) > 1 << 20
    first = httpx.get(f"{server.url}/.well-known/jwks.json", timeout=30)  # makes the memfd meanwhile
    assert first.content == app
    deadline = time.monotonic() + 10
    while memfds(server.proc.pid) == 0:
        assert time.monotonic() < deadline, "no memfd made"
        time.sleep(0.05)
    raw = get("/.well-known/jwks.json") + get("/healthz") + get("/.well-known/jwks.json") + get(
        "/.well-known/jwks.json", method="HEAD")
    answers = exchange(server.port, raw, responses=4, timeout=30)
    assert [a[0].split(b" ")[1] for a in answers[:4]] == [b"200"] * 4 and answers[4][0] == b"open"
    assert answers[0][2] == app and answers[2][2] == app and json.loads(answers[1][2])["status"] == "ok"
    assert answers[3][1]["content-length"] == str(len(app))
    (status, _, body), (state, _, _) = exchange(server.port, get("/.well-known/jwks.json", "Connection: close"))
    assert b" 200 " in status and body == app and state == b"closed"


def test_a_client_that_does_not_read_is_closed_by_the_write_deadline(server):
    httpx.get(f"{server.url}/.well-known/jwks.json", timeout=30)
    metrics = httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS).text
    before = metric_value(metrics, "authserver_connections_closed_total", reason="write_timeout")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", server.port))
    stuck.sendall(get("/.well-known/jwks.json"))
    sent = time.monotonic()
    time.sleep(0.5)
    # meanwhile others are answered, on fresh connections (descriptors reused while its writer is registered)
    for _ in range(5):
        assert len(httpx.get(f"{server.url}/.well-known/jwks.json", timeout=30).content) > 1 << 20
    time.sleep(max(0.0, sent + HEADER_TIMEOUT + 1.5 - time.monotonic()))  # past its deadline, unread
    _, got = closed_after(stuck, limit=5)
    stuck.close()
    assert len(got) < 4 << 20, len(got)  # cut short (reset: maybe nothing of it)
    metrics = httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS).text
    assert metric_value(metrics, "authserver_connections_closed_total", reason="write_timeout") == before + 1
    for _ in range(20):  # the descriptor of the closed one is reused: no stale registration in the loop
        assert len(httpx.get(f"{server.url}/.well-known/jwks.json", timeout=30).content) > 1 << 20
    assert server.proc.poll() is None and "Traceback" not in server.log()
