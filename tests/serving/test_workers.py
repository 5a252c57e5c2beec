"""`authserver serve --workers N` (issue 14): N processes on one port, each with
its own key cache, kept in step like replicas: by Redis notices when there is
Redis, else by the reconcile loop against the shared database."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from http.client import HTTPConnection
from pathlib import Path

import httpx
import pytest
from _env import REDIS_URL, need_service
from _proc import Server, cli, event_loop, wait_until


def children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def fresh_jwks(url: str, n: int = 30) -> list[tuple[str, str]]:
    """n GETs, each on a new connection (the kernel spreads them over the
    workers): (etag, body) of each."""
    host, port = url.removeprefix("http://").split(":")
    out = []
    for _ in range(n):
        conn = HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", "/.well-known/jwks.json")
            r = conn.getresponse()
            assert r.status == 200
            out.append((r.headers["etag"], r.read().decode()))
        finally:
            conn.close()
    return out


def everywhere(url: str, kid: str, present: bool) -> bool:
    return all((kid in body) == present for _, body in fresh_jwks(url))


@pytest.fixture
def env(tmp_path):
    env = {"AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'authserver.db'}", "AUTHSERVER_LOG_JSON": "false",
           "AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS": "1"}
    env["ADMIN_KEY"] = cli(env, "tenant", "create", "default", "--json", "--algorithm", "EdDSA")["admin_key"]
    return env


@pytest.fixture
def start(env, tmp_path):
    started: list[Server] = []

    def run(**extra: str) -> Server:
        s = Server({**env, **extra}, log_dir=tmp_path, args=("--workers", "2"))
        started.append(s)
        return s.start(timeout=60)

    yield run
    for s in started:
        workers = children(s.proc.pid) if s.proc else []  # before the kill: orphans have another parent
        s.kill()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def mint(s: Server) -> str:
    r = httpx.post(f"{s.url}/v1/keys", json={"name": "w"}, timeout=30,
                   headers={"Authorization": f"Bearer {s.env['ADMIN_KEY']}"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def revoke(s: Server, kid: str) -> None:
    r = httpx.delete(f"{s.url}/v1/keys/{kid}", timeout=30, headers={"Authorization": f"Bearer {s.env['ADMIN_KEY']}"})
    assert r.status_code == 200, r.text


def test_two_workers_without_redis_converge_by_reconcile_restart_and_stop(start):
    s = start()
    assert s.proc is not None
    workers = children(s.proc.pid)
    assert len(workers) == 2, workers
    wanted = os.environ.get("AUTHSERVER_LOOP") or "auto"  # auto: uvloop, a dependency
    assert {event_loop(pid) for pid in workers} == {"uvloop" if wanted == "auto" else wanted}
    kid = mint(s)  # committed and applied by the worker that took the call
    t0 = time.monotonic()
    wait_until(lambda: everywhere(s.url, kid, True), 15, what="the other worker reads the new key")
    print(f"\nno Redis: new key in both workers' JWKS after {time.monotonic() - t0:.2f} s")
    etags = {etag for etag, _ in fresh_jwks(s.url)}
    assert len(etags) == 1, "both workers render the same set to the same bytes"
    revoke(s, kid)
    wait_until(lambda: everywhere(s.url, kid, False), 15, what="the revoked key leaves both workers")

    # a worker that dies is started again; the JWKS keeps answering meanwhile
    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(children(s.proc.pid) - {victim}) == 2, 30, what="the parent restarts the worker")
    wait_until(lambda: len(fresh_jwks(s.url, 10)) == 10, 30, what="JWKS after the restart")

    # SIGTERM to the parent stops every worker
    everyone = children(s.proc.pid)
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=30) == 0
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in everyone), 10, what="workers stopped")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited (waiting for whoever reaps orphans)


def test_workers_exit_when_the_parent_is_killed(start):
    """kill -9 of the parent (no chance to stop them): the workers go too, not
    serving the port on their own with no one to restart or stop them."""
    s = start()
    assert s.proc is not None
    workers = children(s.proc.pid)
    assert len(workers) == 2, workers
    s.proc.kill()
    s.proc.wait(timeout=10)
    wait_until(lambda: not any(_running(pid) for pid in workers), 15, what="the orphaned workers exit")


def test_two_workers_with_redis_see_a_change_at_once(start):
    need_service("Redis", "127.0.0.1", int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]))
    s = start(AUTHSERVER_REDIS_URL=REDIS_URL, AUTHSERVER_REDIS_NAMESPACE=f"test-workers-{uuid.uuid4().hex[:8]}",
              AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS="60")  # the reconcile loop cannot be what brings it
    time.sleep(1)  # both subscribed
    kid = mint(s)
    t0 = time.monotonic()
    wait_until(lambda: everywhere(s.url, kid, True), 5, what="the Redis notice reaches the other worker")
    took = time.monotonic() - t0
    print(f"\nRedis: new key in both workers' JWKS after {took:.2f} s")
    assert took < 5
    revoke(s, kid)
    assert everywhere(s.url, kid, False) or wait_until(lambda: everywhere(s.url, kid, False), 5, what="revoked")


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_workers_must_be_a_positive_number(env, bad):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "authserver", "serve", "--workers", bad], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--workers" in out.stderr and "at least 1" in out.stderr


def test_the_portal_works_across_workers(start):
    """Each request on a new connection (the kernel spreads them over the two
    workers): the sign-in form from one worker posts to the other, and the
    session holds on every page, since sessions live in the database."""
    s = start()
    pages = []
    for _ in range(4):  # four people: form and post often land on different workers
        with httpx.Client(base_url=s.url, timeout=30, follow_redirects=False,
                          limits=httpx.Limits(max_keepalive_connections=0)) as browser:
            form = browser.get("/portal/login")
            token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
            r = browser.post("/portal/login", data={"csrf_token": token, "admin_key": s.env["ADMIN_KEY"]})
            assert r.status_code == 303 and r.headers["location"] == "/portal/keys", r.text[:300]
            pages += [browser.get("/portal/keys").status_code for _ in range(6)]
    assert pages == [200] * 24
