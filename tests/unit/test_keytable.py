"""The columnar key table (issue 14): against a dict, through adds, changes
and removals that shift its hash table's entries back, grow it and reuse
freed slots, with thumbprint kids and kids of any other form."""

from __future__ import annotations

import base64
import dataclasses
import random

from authserver.keycache import PublishedKey
from authserver.keytable import KeyTable


def _key(kid: str, rng: random.Random) -> PublishedKey:
    kind = rng.choice(["api", "api", "pending", "admin"])
    return PublishedKey(
        kid, "acme", kind, rng.choice([kid, "user-1", "user-2"]), rng.choice([(), ("read",)]),
        rng.choice([(), ({"limit": 5, "window_seconds": 60},)]), rng.choice([None, 1_700_000_500]),
        rng.choice([None, 0, 3]), rng.choice([None, {"team": "a"}]), b"{}" if kind == "admin" else None,
        rng.choice(["sk_live_", "sk_live_s3_"]), 1_700_000_000 + rng.randrange(100), rng.random() < 0.5,
        rng.random() < 0.5)


def _thumbprints(rng: random.Random, n: int) -> list[str]:
    return [base64.urlsafe_b64encode(rng.randbytes(32)).rstrip(b"=").decode() for _ in range(n)]


def test_the_table_answers_as_a_dict_would() -> None:
    rng = random.Random(7)
    kids = _thumbprints(rng, 600) + ["sentinel", "x" * 43, "a\"b", "é", ""]
    table, model = KeyTable("acme"), dict[str, PublishedKey]()
    for step in range(4000):
        kid = rng.choice(kids)
        if rng.random() < 0.6:
            key = _key(kid, rng)
            table.put(key)
            model[kid] = key
        else:
            assert table.pop(kid) == model.pop(kid, None)
        if step % 500 == 0 or step == 3999:
            assert len(table) == len(model)
            assert sorted(table) == sorted(model)
            for k in kids:
                assert table.get(k) == model.get(k) and (k in table) == (k in model)
                assert table.kind(k) == (model[k].kind if k in model else None)
                assert table.removed_at(k) == (model[k].removed_at if k in model else None)
            assert sorted(table.values(), key=lambda k: k.kid) == sorted(model.values(), key=lambda k: k.kid)
            for kind in ("api", "pending", "admin"):
                assert table.count(kind) == sum(1 for k in model.values() if k.kind == kind)


def test_values_past_the_narrow_columns_widen_them() -> None:
    """Times are kept in 32 bits and profiles numbered in 16 until one does
    not fit: then the column widens, and every key still reads back as put."""
    rng = random.Random(11)
    kids = _thumbprints(rng, 300)
    table, model = KeyTable("acme"), dict[str, PublishedKey]()
    for i, kid in enumerate(kids):
        key = dataclasses.replace(_key(kid, rng), kind="api", jwk_bytes=None, published_at=1_700_000_000 + i,
                                  removed_at=rng.choice([None, 1_700_000_500]))
        table.put(key)
        model[kid] = key
    odd = {kids[0]: {"removed_at": 2**32 - 1}, kids[1]: {"removed_at": -5}, kids[2]: {"published_at": 2**40},
           kids[3]: {"removed_at": 0}, kids[4]: {"published_at": 0}}
    for kid, fields in odd.items():
        model[kid] = dataclasses.replace(model[kid], **fields)
        table.put(model[kid])
    for n in range(70_000):  # distinct (kind, prefix, shard): past 2**16 profiles
        key = dataclasses.replace(model[kids[5 + n % 200]], shard=n)
        table.put(key)
        model[key.kid] = key
    for kid in kids:
        assert table.get(kid) == model[kid] and table.removed_at(kid) == model[kid].removed_at
    assert table.count("api") == len(kids)
