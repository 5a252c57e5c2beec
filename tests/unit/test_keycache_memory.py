"""What the key cache keeps per key (issue 14): the JWK's bytes once, in the
JWKS document, and no parsed key until one is verified."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from pathlib import Path

from test_keycache_tenant import NOW, key_row, tenant_row

import keys
from authserver.keycache import KeyCache

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ runs from the checkout
from bench._keys import synthetic_jwk  # noqa: E402

JWKS_BYTES_PER_RS256_KEY = 452


def test_rs256_keys_cost_little_more_than_their_jwk_bytes() -> None:
    cache = KeyCache(lambda: NOW)
    row = tenant_row()
    tk = cache.set_tenant(row)
    rows = []
    for _ in range(2000):
        jwk = synthetic_jwk("RS256")
        r, _ = key_row(row)
        r.id = r.subject = jwk["kid"]
        r.public_jwk, r.algorithm = jwk, "RS256"
        rows.append(r)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache.apply_all(rows)
        del rows, r
        gc.collect()
        per_key = (tracemalloc.get_traced_memory()[0] - before) / 2000
        cache.compact()  # as after a load; rendering then joins nothing more
        body = tk.jwks().chunks(False)
        gc.collect()
        per_key_rendered = (tracemalloc.get_traced_memory()[0] - before) / 2000
    finally:
        tracemalloc.stop()
    # the JWK bytes (~485 B with the object) plus the key's record and the
    # dict entries, before any rendering; a parsed RSA key alone was ~2 KB more
    assert per_key < 2 * JWKS_BYTES_PER_RS256_KEY, per_key
    # rendered, each key's bytes are held once, joined in its segment (with a
    # copy per key too, as before, this was ~1.1 KB), and its record is a row
    # of columns (~70 B: ~530 B in all; one object per key, its dict entry and
    # its int fields were ~690 B)
    assert per_key_rendered < 1.3 * JWKS_BYTES_PER_RS256_KEY, per_key_rendered
    assert tk.jwk_bytes(tk.published[kid := next(iter(tk.published))]) in b"".join(body)
    assert kid.encode() in tk.jwks().body


def test_a_key_is_parsed_when_verified_and_forgotten_when_it_leaves() -> None:
    cache = KeyCache(lambda: NOW)
    row = tenant_row()
    tk = cache.set_tenant(row)
    key, minted = key_row(row)
    cache.apply(key)
    verified, published = tk.verify_api(minted.key)
    assert verified.kid == published.kid == minted.kid and tk.jwk(published) == keys.public_only(minted.public_jwk)
    assert published.meta == {} and published.subject is published.kid  # nothing kept twice
    key.revoked_at = int(NOW)
    cache.apply(key)
    try:
        tk.verify_api(minted.key)
    except keys.UnknownKeyId:
        pass
    else:
        raise AssertionError("a revoked key verified")


def test_reapplying_a_row_compares_against_the_bytes_the_document_holds() -> None:
    """The cache keeps no JWK bytes per API key, so an unchanged row (reconcile
    rereads every recent row) must still count as unchanged, a new name or
    limit must not touch the JWKS, and new JWK bytes must replace them."""
    cache = KeyCache(lambda: NOW)
    row = tenant_row()
    tk = cache.set_tenant(row)
    changes: list[str] = []
    cache.listeners.append(changes.append)
    key, minted = key_row(row)
    assert cache.apply(key) and tk.published[minted.kid].jwk_bytes is None
    served = tk.jwks()
    assert not cache.apply(key) and changes == ["acme"]  # unchanged: no change notice
    key.rate_limits = [{"limit": 5, "window_seconds": 60}]
    assert cache.apply(key) and tk.jwks() is served  # same public key: the JWKS stays rendered
    key.public_jwk = {k: v for k, v in minted.public_jwk.items() if k != "use"}
    assert cache.apply(key)
    assert tk.jwks().etag != served.etag and b'"use"' not in tk.jwk_bytes(tk.published[minted.kid])
    assert tk.verify_api(minted.key)[1].kid == minted.kid
