"""JWKSDocument: sentinel, ETag, stripping, incremental serialization."""

from __future__ import annotations

import base64
import gzip
import json
import random
import re
import zlib

import pytest
from jwcrypto import jwk as jwcrypto_jwk
from keys_support import AUDIENCE, ISSUER, NOW, PRIVATE_MEMBERS

import keys
import keys.jwks


@pytest.fixture(scope="module")
def sentinel():
    return keys.sentinel_jwk()


@pytest.fixture(scope="module")
def published():
    """Three published keys of cheap algorithms (plus their minted tokens)."""
    return [keys.mint({"iss": ISSUER, "aud": AUDIENCE}, algorithm=alg, clock=lambda: NOW)
            for alg in ("EdDSA", "ES256", "EdDSA")]


def body(doc: keys.JWKSDocument) -> dict:
    return json.loads(doc.render().body)


def test_sentinel_is_served_only_while_empty(sentinel, published):
    doc = keys.JWKSDocument(sentinel=sentinel)
    rendered = doc.render()
    assert json.loads(rendered.body) == {"keys": [keys.public_only(sentinel)]}
    assert rendered.key_count == 1 and len(doc) == 0
    assert sentinel["kid"] not in doc

    doc.add(published[0].public_jwk)
    assert body(doc) == {"keys": [published[0].public_jwk]}
    assert sentinel["kid"] not in doc.render().body.decode()
    assert doc.render().key_count == 1

    assert doc.remove(published[0].kid) is True
    assert body(doc) == {"keys": [keys.public_only(sentinel)]}


def test_sentinel_is_a_valid_public_key_nobody_can_sign_for(sentinel):
    assert not set(PRIVATE_MEMBERS) & set(sentinel)
    assert sentinel["kid"] == keys.thumbprint(sentinel)
    assert sentinel["alg"] == "EdDSA"
    assert keys.load_public_jwk(sentinel).kid == sentinel["kid"]
    assert keys.sentinel_jwk()["kid"] != sentinel["kid"]  # a fresh keypair each time
    assert keys.sentinel_jwk("ES256")["alg"] == "ES256"


def test_body_is_a_jwks_that_verifiers_and_other_libraries_load(sentinel, published):
    doc = keys.JWKSDocument(sentinel=sentinel)
    for m in published:
        doc.add(m.public_jwk)
    parsed = body(doc)
    assert isinstance(parsed["keys"], list) and len(parsed["keys"]) == 3
    assert [k["kid"] for k in parsed["keys"]] == sorted(m.kid for m in published)
    assert all({"kid", "alg"} <= set(k) for k in parsed["keys"])
    assert len(jwcrypto_jwk.JWKSet.from_json(doc.render().body)["keys"]) == 3
    keyset = keys.PublicKeySet.from_jwks_document(doc.render().body)
    verifier = keys.Verifier(keyset, issuer=ISSUER, audience=AUDIENCE, algorithms=["EdDSA", "ES256"],
                             clock=lambda: NOW)
    for m in published:
        assert verifier.verify(m.key).kid == m.kid


def test_etag_changes_with_content_and_only_with_content(sentinel, published):
    doc = keys.JWKSDocument(sentinel=sentinel)
    empty = doc.render().etag
    assert re.fullmatch(r'"[A-Za-z0-9_-]{16,}"', empty)
    doc.add(published[0].public_jwk)
    one = doc.render().etag
    doc.add(published[1].public_jwk)
    two = doc.render().etag
    assert len({empty, one, two}) == 3

    assert doc.remove(published[1].kid)
    assert doc.render().etag == one
    assert doc.remove(published[0].kid)
    assert doc.render().etag == empty

    twin = keys.JWKSDocument(sentinel=sentinel)
    assert twin.render().etag == empty
    for m in published[:2]:
        twin.add(m.public_jwk)
        doc.add(m.public_jwk)
    assert twin.render() == doc.render()  # same content -> same body and ETag


def test_bytes_depend_on_the_set_not_the_order_of_changes(sentinel):
    """A restarted process or another replica loads keys in another order; the
    served bytes and ETag must still match, or every gateway refetches."""
    minted = [keys.mint({"iss": ISSUER, "aud": AUDIENCE}, algorithm="EdDSA", clock=lambda: NOW)
              for _ in range(12)]
    forward, backward = keys.JWKSDocument(sentinel=sentinel), keys.JWKSDocument(sentinel=sentinel)
    for m in minted:
        forward.add(m.public_jwk)
        forward.render()  # renders in between must not freeze an order
    for m in reversed(minted):
        backward.add(m.public_jwk)
    assert forward.render() == backward.render()
    kids = [k["kid"] for k in body(forward)["keys"]]
    assert kids == sorted(m.kid for m in minted)

    # removing and re-adding keeps the order canonical
    forward.remove(minted[3].kid)
    forward.render()
    forward.add(minted[3].public_jwk)
    assert forward.render() == backward.render()


def test_order_holds_through_bulk_loads_replacements_and_unrendered_removals(sentinel):
    jwks = [keys.mint({"iss": ISSUER, "aud": AUDIENCE}, algorithm="EdDSA", clock=lambda: NOW).public_jwk
            for _ in range(200)]
    doc = keys.JWKSDocument(sentinel=sentinel)
    for j in jwks[:150]:  # a bulk load (one sort) ...
        doc.add(j)
    doc.render()
    for j in jwks[150:]:  # ... then a few at a time (binary insertion)
        doc.add(j)
    doc.remove(jwks[199]["kid"])  # removed before it was ever rendered
    doc.remove(jwks[0]["kid"])  # removed after
    assert jwks[10]["use"] == "sig"
    renamed = {k: v for k, v in jwks[10].items() if k != "use"}  # the same kid again replaces its bytes
    doc.add(renamed)
    served = body(doc)["keys"]
    assert [k["kid"] for k in served] == sorted(j["kid"] for j in jwks[1:199])
    assert "use" not in next(k for k in served if k["kid"] == renamed["kid"])
    assert len(doc) == 198 and doc.render().key_count == 198


def test_etag_differs_between_sentinels(published):
    a = keys.JWKSDocument(sentinel=keys.sentinel_jwk())
    b = keys.JWKSDocument(sentinel=keys.sentinel_jwk())
    assert a.render().etag != b.render().etag


def test_render_is_cached_until_a_change(sentinel, published):
    doc = keys.JWKSDocument(sentinel=sentinel)
    doc.add(published[0].public_jwk)
    first = doc.render()
    assert doc.render() is first
    doc.add(published[1].public_jwk)
    assert doc.render() is not first
    second = doc.render()
    assert doc.remove("no-such-kid") is False
    assert doc.render() is second  # a no-op does not invalidate


def test_add_strips_private_members(sentinel):
    ec_private = json.loads(jwcrypto_jwk.JWK.generate(kty="EC", crv="P-256").export_private())
    okp_private = json.loads(jwcrypto_jwk.JWK.generate(kty="OKP", crv="Ed25519").export_private())
    assert "d" in ec_private and "d" in okp_private
    rsa_like = {"kty": "RSA", "n": "AQAB" * 10, "e": "AQAB", "d": "c2VjcmV0", "p": "cA", "q": "cQ",
                "dp": "ZHA", "dq": "ZHE", "qi": "cWk", "oth": [{"r": "cg"}], "k": "aw"}
    doc = keys.JWKSDocument(sentinel=sentinel)
    for name, jwk, alg in (("ec", ec_private, "ES256"), ("okp", okp_private, "EdDSA"), ("rsa", rsa_like, "RS256")):
        jwk = {**jwk, "kid": name, "alg": alg, "x5c": ["MIIB"], "x5u": "https://evil.example/c.pem",
               "jku": "https://evil.example/jwks.json", "key_ops": ["sign"], "extra": "x"}
        doc.add(jwk)
    raw = doc.render().body.decode()
    for served in json.loads(raw)["keys"]:
        assert not set(PRIVATE_MEMBERS) & set(served), served
        assert set(served) <= {"kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"}
    assert '"d"' not in raw and "evil.example" not in raw and "c2VjcmV0" not in raw
    assert ec_private["d"] not in raw and okp_private["d"] not in raw


def test_sentinel_private_members_are_stripped_too():
    private = json.loads(jwcrypto_jwk.JWK.generate(kty="OKP", crv="Ed25519").export_private())
    private.update(alg="EdDSA", kid="s")
    doc = keys.JWKSDocument(sentinel=private)
    assert private["d"] not in doc.render().body.decode()


def test_remove_unknown_kid_returns_false(sentinel, published):
    doc = keys.JWKSDocument(sentinel=sentinel)
    assert doc.remove("nope") is False
    doc.add(published[0].public_jwk)
    assert doc.remove(published[1].kid) is False
    assert doc.remove(published[0].kid) is True
    assert doc.remove(published[0].kid) is False


@pytest.mark.parametrize("drop", ["kid", "alg"])
def test_add_requires_kid_and_alg(drop, sentinel, published):
    doc = keys.JWKSDocument(sentinel=sentinel)
    jwk = {k: v for k, v in published[0].public_jwk.items() if k != drop}
    with pytest.raises(ValueError):
        doc.add(jwk)
    assert len(doc) == 0


@pytest.mark.parametrize("kid", [None, 5, ["k"]])
def test_add_requires_a_string_kid(kid, sentinel, published):
    doc = keys.JWKSDocument(sentinel=sentinel)
    with pytest.raises(ValueError):
        doc.add({**published[0].public_jwk, "kid": kid})


def test_membership_and_kids(sentinel, published):
    doc = keys.JWKSDocument(sentinel=sentinel)
    for m in published:
        doc.add(m.public_jwk)
    assert len(doc) == 3 and list(doc.kids()) == sorted(m.kid for m in published)  # kid order
    assert published[1].kid in doc and "other" not in doc
    doc.add(published[1].public_jwk)  # re-adding replaces, does not duplicate
    assert len(doc) == 3 and body(doc)["keys"].count(published[1].public_jwk) == 1


def test_adding_serializes_only_the_new_key(monkeypatch, sentinel, published):
    doc = keys.JWKSDocument(sentinel=sentinel)
    calls: list[str] = []
    original = keys.jwks._serialize

    def counting(jwk):
        calls.append(jwk["kid"])
        return original(jwk)

    monkeypatch.setattr(keys.jwks, "_serialize", counting)
    for i, m in enumerate(published, start=1):
        doc.add(m.public_jwk)
        doc.render()
        assert calls == [p.kid for p in published[:i]]  # once per add, never the old ones
    doc.remove(published[0].kid)
    doc.render()
    assert len(calls) == 3  # removal re-serializes nothing


def _random_jwk(rng: random.Random, i: int) -> dict:
    # cheap stand-ins with RS256-like bytes: the document never parses the key
    return {"kty": "RSA", "kid": f"{rng.getrandbits(128):032x}", "alg": "RS256", "use": "sig", "e": "AQAB",
            "n": base64.urlsafe_b64encode(rng.randbytes(64 + i % 7)).decode().rstrip("=")}


def test_gzip_is_the_identity_body_after_many_random_changes(sentinel):
    """Segments are recompressed one at a time; the gzip stream must still be
    exactly the identity body, for the stdlib, a streaming zlib reader (one
    member only, as httpx and browsers read it) and a fresh document."""
    rng = random.Random(14)
    doc = keys.JWKSDocument(sentinel=sentinel)
    live: dict[str, dict] = {}
    for i in range(3000):
        j = _random_jwk(rng, i)
        live[j["kid"]] = j
        doc.add(j)
    assert doc.segment_count > 20  # the set really is cut in segments
    for step in range(400):
        roll = rng.random()
        if roll < 0.45 and live:
            kid = rng.choice(sorted(live))
            assert doc.remove(kid)
            del live[kid]
        elif roll < 0.9:
            j = _random_jwk(rng, step)
            live[j["kid"]] = j
            doc.add(j)
        else:  # the same kid with other bytes
            kid = rng.choice(sorted(live))
            live[kid] = {**live[kid], "use": "sig" if "use" not in live[kid] else None}
            live[kid] = {k: v for k, v in live[kid].items() if v is not None}
            doc.add(live[kid])
        if step % 37 == 0 or step == 399:
            rendered = doc.render()
            d = zlib.decompressobj(wbits=31)
            assert d.decompress(rendered.gzipped) == rendered.body and d.eof and d.unused_data == b""
            assert gzip.decompress(rendered.gzipped) == rendered.body
            fresh = keys.JWKSDocument(sentinel=sentinel)
            for j in reversed(list(live.values())):
                fresh.add(j)
            assert fresh.render() == rendered and fresh.render().gzipped == rendered.gzipped
            assert [k["kid"] for k in json.loads(rendered.body)["keys"]] == sorted(live)
        if step % 5 == 0:  # a key's own bytes, cut from a rendered segment or from one with changes
            kid = rng.choice(sorted(live))
            assert doc.get(kid) == keys.jwks.serialize_jwk(live[kid])
            assert doc.get(kid + "x") is None
    doc.compact()  # joined without a render: the same bytes
    assert all(doc.get(kid) == keys.jwks.serialize_jwk(j) for kid, j in live.items())
    assert doc.render() == fresh.render()
    while live:  # down to the sentinel
        doc.remove(live.popitem()[0])
    assert gzip.decompress(doc.render().gzipped) == doc.render().body
    assert json.loads(doc.render().body) == {"keys": [keys.public_only(sentinel)]}


def test_a_change_recompresses_one_segment(monkeypatch, sentinel):
    rng = random.Random(3)
    doc = keys.JWKSDocument(sentinel=sentinel)
    for i in range(2000):
        doc.add(_random_jwk(rng, i))
    _ = doc.render().gzipped
    calls: list[int] = []
    original = keys.jwks._deflate
    monkeypatch.setattr(keys.jwks, "_deflate", lambda data: calls.append(len(data)) or original(data))
    doc.add(_random_jwk(rng, 1))
    rendered = doc.render()
    assert gzip.decompress(rendered.gzipped) == rendered.body
    assert 1 <= len(calls) <= 2 and sum(calls) < len(rendered.body) / 8  # one segment (two if it split)
