"""FastJWKS in process, on the app's own core and test clock: the answers it
keeps per rendering follow every change at once (a revocation, an expiry
that falls due), are shared by request targets that differ only in their
query, and the joined bodies of all routes stay within their budget."""

from __future__ import annotations

import gzip
import json

from authserver import serving

DATE = [(b"date", b"Wed, 02 Dec 2026 22:00:00 GMT"), (b"server", b"uvicorn")]


def ask(fast: serving.FastJWKS, url: bytes, *headers: tuple[bytes, bytes], head: bool = False,
        date: list[tuple[bytes, bytes]] = DATE) -> serving.Reply:
    reply = fast.respond(head, url, list(headers), date, True)
    assert reply is not None
    return reply


def body_of(reply: serving.Reply) -> bytes:
    head, _, body = reply.data.partition(b"\r\n\r\n")
    return body


def kids(reply: serving.Reply) -> set[str]:
    return {k["kid"] for k in json.loads(body_of(reply))["keys"]}


async def mint(client, admin_headers, **body) -> str:
    r = await client.post("/v1/keys", json={"name": "k", **body}, headers=admin_headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_changes_are_answered_from_the_next_request(client, admin_headers, clock):
    fast = serving.FastJWKS(client.app.state["core"])
    keep = await mint(client, admin_headers)
    gone = await mint(client, admin_headers)
    due = await mint(client, admin_headers, expires_in=30)
    first = ask(fast, b"/.well-known/jwks.json")
    assert ask(fast, b"/.well-known/jwks.json") is first  # kept, not made again
    assert kids(first) == {keep, gone, due}
    assert b"max-age=30\r\n" in first.data
    await client.delete(f"/v1/keys/{gone}", headers=admin_headers)
    after = ask(fast, b"/.well-known/jwks.json")
    assert kids(after) == {keep, due}
    zipped = ask(fast, b"/.well-known/jwks.json", (b"accept-encoding", b"gzip"))
    assert json.loads(gzip.decompress(body_of(zipped))) == json.loads(body_of(after))
    clock.advance(10)  # max-age follows the clock to the removal
    assert b"max-age=20\r\n" in ask(fast, b"/.well-known/jwks.json").data
    clock.advance(20)  # due: removed by the request itself, no notice needed
    assert kids(ask(fast, b"/.well-known/jwks.json")) == {keep}


async def test_answers_are_kept_per_route_not_per_query(client, admin_headers):
    fast = serving.FastJWKS(client.app.state["core"])
    await mint(client, admin_headers)
    plain = ask(fast, b"/t/default/.well-known/jwks.json")
    for i in range(300):  # more request targets than are remembered
        assert ask(fast, b"/t/default/.well-known/jwks.json?n=%d" % i) is plain
    assert len(fast._targets) == 1 and fast._joined == len(plain.data)
    assert fast.respond(False, b"/t/nobody/.well-known/jwks.json", [], DATE, True) is None  # the app's 404
    assert fast.respond(False, b"/t/default/shards/7/jwks.json", [], DATE, True) is None


async def test_joined_bodies_stay_within_their_budget(client, admin_headers, monkeypatch):
    fast = serving.FastJWKS(client.app.state["core"])
    await mint(client, admin_headers)
    one = len(ask(fast, b"/.well-known/jwks.json").data)
    monkeypatch.setattr(serving, "_JOINED_BUDGET", one + one // 2)
    dates = [[(b"date", b"Wed, 02 Dec 2026 22:00:%02d GMT" % s)] for s in range(5)]
    for date in dates:  # a new Date header: every answer made again
        for url in (b"/.well-known/jwks.json", b"/t/default/.well-known/jwks.json"):
            reply = ask(fast, url, date=date)
            assert reply.data.startswith(b"HTTP/1.1 200 OK\r\n") and kids(reply)
            assert fast._joined <= one + one // 2
            assert fast._joined == sum(r.joined for r in fast._targets.values())
    head = ask(fast, b"/.well-known/jwks.json", head=True)
    assert head.data.endswith(b"\r\n\r\n") and b"content-length: %d\r\n" % len(body_of(reply)) in head.data
