"""The JWKS GETs that `authserver serve` answers in the HTTP protocol itself
(authserver.serving.FastJWKS), on the wire: the same answer as the app's,
keep-alive and pipelining intact, and everything else left to the app."""

from __future__ import annotations

import gzip
import json
import socket
import time

import httpx
import pytest
from _env import METRICS_HEADERS
from _proc import Server, cli, event_loop
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture(scope="module")
def server(tmp_path_factory, loop):
    tmp = tmp_path_factory.mktemp("fast")
    env = {"AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp / 'authserver.db'}", "AUTHSERVER_LOG_JSON": "false",
           "AUTHSERVER_LOOP": loop}
    admin = cli(env, "tenant", "create", "default", "--json", "--algorithm", "EdDSA")["admin_key"]
    s = Server(env, log_dir=tmp).start()
    assert s.proc is not None and event_loop(s.proc.pid) == loop
    for _ in range(3):
        r = httpx.post(f"{s.url}/v1/keys", json={"name": "k"}, headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 201
    s.env["ADMIN_KEY"] = admin
    yield s
    s.kill()


def exchange(port: int, raw: bytes, responses: int = 1, timeout: float = 5) -> list[tuple[bytes, dict, bytes]]:
    """Send raw bytes, read ``responses`` answers (Content-Length framed; HEAD/304 none)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(raw)
    buf, out = b"", []
    heads = [line.split(b" ")[0] for line in raw.split(b"\r\n") if line.endswith((b" HTTP/1.1", b" HTTP/1.0"))]
    try:
        for i in range(responses):
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                assert chunk, "closed early"
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            status, *lines = head.split(b"\r\n")
            headers = {k.decode().lower(): v.decode() for k, _, v in (ln.partition(b": ") for ln in lines)}
            length = 0 if heads[i] == b"HEAD" or b" 304 " in status else int(headers.get("content-length", 0))
            while len(buf) < length:
                chunk = sock.recv(65536)
                assert chunk, "closed early"
                buf += chunk
            out.append((status, headers, buf[:length]))
            buf = buf[length:]
        sock.settimeout(0.5)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        out.append((b"closed" if closed else b"open", {}, b""))
    finally:
        sock.close()
    return out


def get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    return (f"{method} {path} HTTP/{version}\r\nHost: x\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def test_same_answer_as_the_app_identity_gzip_head_304(server):
    app = httpx.get(f"{server.url}/t/default/.well-known/jwks.json", headers={"Accept-Encoding": "identity"})
    (status, h, body), (state, _, _) = exchange(server.port, get("/.well-known/jwks.json"))
    assert status == b"HTTP/1.1 200 OK" and state == b"open"  # keep-alive
    assert body == app.content and len(json.loads(body)["keys"]) == 3
    assert h["etag"] == app.headers["etag"] and h["content-type"] == "application/json"
    assert h["vary"] == "Accept-Encoding" and h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == app.headers["cache-control"] and "date" in h
    (_, hz, gz), _ = exchange(server.port, get("/t/default/.well-known/jwks.json", "Accept-Encoding: gzip"))
    assert hz["content-encoding"] == "gzip" and gzip.decompress(gz) == body and hz["etag"] == h["etag"]
    (status, hh, hbody), _ = exchange(server.port, get("/.well-known/jwks.json", method="HEAD"))
    assert status.endswith(b"200 OK") and hbody == b"" and hh["content-length"] == str(len(body))
    (status, h304, b304), _ = exchange(server.port, get("/.well-known/jwks.json", f"If-None-Match: {h['etag']}"))
    assert status == b"HTTP/1.1 304 Not Modified" and b304 == b"" and h304["etag"] == h["etag"]


def test_keep_alive_pipelining_close_and_query(server):
    raw = (get("/.well-known/jwks.json") + get("/healthz") + get("/.well-known/jwks.json?x=1")
           + get("/t/default/.well-known/jwks.json", method="HEAD"))
    answers = exchange(server.port, raw, responses=4)
    assert [a[0].split(b" ")[1] for a in answers[:4]] == [b"200"] * 4 and answers[4][0] == b"open"
    assert json.loads(answers[1][2])["status"] == "ok"  # the app answered in between, in order
    assert answers[0][2] == answers[2][2]
    # HTTP/1.0 and Connection: close are closed after the answer
    for raw in (get("/.well-known/jwks.json", version="1.0"), get("/.well-known/jwks.json", "Connection: close")):
        (status, h, body), (state, _, _) = exchange(server.port, raw)
        assert b" 200 " in status and body and state == b"closed"


def test_everything_else_goes_to_the_app(server):
    for path in ("/t/nosuch/.well-known/jwks.json", "/t/default/shards/3/jwks.json", "/t/%64efault/x"):
        (status, h, body), _ = exchange(server.port, get(path))
        assert b" 404 " in status and h["content-type"].startswith("application/problem+json"), path
    # percent-encoded: decoded by uvicorn, answered by the app's route (same bytes)
    (status, _, body), _ = exchange(server.port, get("/t/%64efault/.well-known/jwks.json"))
    assert b" 200 " in status and len(json.loads(body)["keys"]) == 3
    (status, _, _), _ = exchange(server.port, get("/.well-known/jwks.json", method="POST"))
    assert b" 405 " in status
    # a GET with a body: the app reads it
    raw = b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    (status, _, body), (state, _, _) = exchange(server.port, raw)
    assert b" 200 " in status and json.loads(body)["keys"] and state == b"open"


def test_many_pipelined_requests_from_a_slow_reader_answer_in_order(server):
    """The fast path stops while the client is behind on reading (the app's path
    then queues the rest with flow control): every answer arrives, in order."""
    raw = b"".join(get("/.well-known/jwks.json") if i % 7 else get("/healthz") for i in range(60))
    answers = exchange(server.port, raw, responses=60, timeout=30)
    jwks = {body for i, (status, _, body) in enumerate(answers[:60]) if i % 7}
    assert all(b" 200 " in a[0] for a in answers[:60]) and len(jwks) == 1
    assert all(json.loads(answers[i][2])["status"] == "ok" for i in range(0, 60, 7))


def test_counted_in_the_metrics_under_the_route_template(server):
    def count() -> float:
        text = httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (sample.name == "authserver_http_requests_total" and sample.labels
                        == {"route": "/.well-known/jwks.json", "method": "GET", "status": "200"}):
                    return sample.value
        return 0.0

    def fetches() -> float:  # authserver_jwks_fetches, counted apart and added in when scraped
        text = httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS).text
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "authserver_jwks_fetches_total" and s.labels.get("result") == "full")

    before, fetched = count(), fetches()
    exchange(server.port, get("/.well-known/jwks.json") * 3, responses=3)
    assert count() == before + 3
    assert fetches() == fetched + 3


def test_idle_keep_alive_connection_closed_after_fast_answers(server):
    """uvicorn's keep-alive timeout (5 s) still closes a connection left idle
    after fast answers (their timer moves lazily to the last answer): one that
    asks every 2 s stays open past it, then closes once idle."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    try:
        for _ in range(5):
            sock.sendall(get("/.well-known/jwks.json", method="HEAD"))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                assert chunk, "closed while in use"
                head += chunk
            assert head.startswith(b"HTTP/1.1 200 ")
            time.sleep(2)
        assert sock.recv(1) == b""  # then closed by the server, idle
    finally:
        sock.close()


class Conn:
    """One keep-alive connection: a request, its answer (Content-Length framed)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def ask(self, raw: bytes) -> tuple[bytes, dict, bytes]:
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "closed early"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = {k.decode().lower(): v.decode() for k, _, v in (ln.partition(b": ") for ln in lines)}
        length = 0 if raw.startswith(b"HEAD") or b" 304 " in status else int(headers["content-length"])
        while len(self.buf) < length:
            chunk = self.sock.recv(65536)
            assert chunk, "closed early"
            self.buf += chunk
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def close(self) -> None:
        self.sock.close()


def admin_call(server, method: str, path: str, **kwargs) -> dict:
    r = httpx.request(method, f"{server.url}{path}", headers={"Authorization": f"Bearer {server.env['ADMIN_KEY']}"},
                      timeout=30, **kwargs)
    assert r.status_code in (200, 201), r.text
    return r.json()


def kids(body: bytes) -> set[str]:
    return {k["kid"] for k in json.loads(body)["keys"]}


def test_a_revocation_is_served_from_the_next_request_on_the_same_connection(server):
    """The answers are kept per rendering: after a revocation, the very next
    request (no wait, the same connection that fetched the old set just before,
    in every form: identity, gzip, HEAD, 304) gets the new set."""
    kid = admin_call(server, "POST", "/v1/keys", json={"name": "gone soon"})["id"]
    conn = Conn(server.port)
    try:
        forms = [get("/.well-known/jwks.json"), get("/.well-known/jwks.json", "Accept-Encoding: gzip"),
                 get("/.well-known/jwks.json", method="HEAD")]
        for _ in range(2):  # twice: the second answers come from what the first prepared
            status, h, body = conn.ask(forms[0])
            assert status.endswith(b"200 OK") and kid in kids(body)
            assert kid in kids(gzip.decompress(conn.ask(forms[1])[2]))
            assert conn.ask(forms[2])[1]["content-length"] == str(len(body))
            status, _, _ = conn.ask(get("/.well-known/jwks.json", f"If-None-Match: {h['etag']}"))
            assert status.endswith(b" 304 Not Modified")
        admin_call(server, "DELETE", f"/v1/keys/{kid}")
        status, h2, body2 = conn.ask(get("/.well-known/jwks.json", f"If-None-Match: {h['etag']}"))
        assert status.endswith(b"200 OK") and h2["etag"] != h["etag"] and kid not in kids(body2)
        assert kids(body2) == kids(body) - {kid}
        _, hz, gz = conn.ask(forms[1])
        assert hz["etag"] == h2["etag"] and gzip.decompress(gz) == body2
        _, hh, _ = conn.ask(forms[2])
        assert hh["etag"] == h2["etag"] and hh["content-length"] == str(len(body2))
        status, _, _ = conn.ask(get("/.well-known/jwks.json", f"If-None-Match: W/{h2['etag']}, \"x\""))
        assert status.endswith(b" 304 Not Modified")
    finally:
        conn.close()


def test_an_expiry_is_served_when_due_with_no_change_notice(server):
    """A key with an expiry leaves the set the moment it is due (the request
    itself removes it), and max-age never runs past that moment."""
    minted = time.monotonic()
    kid = admin_call(server, "POST", "/v1/keys", json={"name": "short", "expires_in": 3})["id"]
    conn = Conn(server.port)
    try:
        _, h, body = conn.ask(get("/.well-known/jwks.json"))
        assert kid in kids(body)
        assert int(h["cache-control"].split("max-age=")[1]) <= 3
        deadline = minted + 3 + 1.5  # 3 s and the time a change takes to show, at most
        while kid in kids(body):
            assert time.monotonic() < deadline, "the expired key is still served"
            time.sleep(0.05)
            _, h, body = conn.ask(get("/.well-known/jwks.json"))
    finally:
        conn.close()


def test_latency_is_counted_per_answer_and_folded_when_scraped(server):
    def histogram() -> tuple[float, float, dict[str, float]]:
        text = httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS).text
        count = total = 0.0
        buckets: dict[str, float] = {}
        labels = {"route": "/t/{tenant_id}/.well-known/jwks.json", "method": "HEAD"}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("authserver_http_request_duration_seconds") and \
                        {k: v for k, v in sample.labels.items() if k != "le"} == labels:
                    if sample.name.endswith("_count"):
                        count = sample.value
                    elif sample.name.endswith("_sum"):
                        total = sample.value
                    elif sample.name.endswith("_bucket"):
                        buckets[sample.labels["le"]] = sample.value
        return count, total, buckets

    count, total, buckets = histogram()
    exchange(server.port, get("/t/default/.well-known/jwks.json", method="HEAD") * 4, responses=4)
    count2, total2, buckets2 = histogram()
    assert count2 == count + 4 and total2 > total
    assert buckets2["+Inf"] == count2 and buckets2["5.0"] == count2  # cumulative: every answer took < 5 s
    assert all(buckets2[le] >= buckets.get(le, 0) for le in buckets2)
